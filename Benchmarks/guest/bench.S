/*
 * Swiftlet benchmark guests: one source, built once per MODE (see Makefile). 32-bit PVH entry,
 * no paging, no stack use beyond the hypercall stubs. Each writes checkpoint 1 to port 0x504,
 * does COUNT exits of its kind, writes checkpoint 2, then exits through QEMU's isa-debug-exit
 * (port 0xf4), which both Swiftlet and the C floor (and QEMU) understand.
 *   MODE_PIO    COUNT x  out %eax, $0x44 (an unclaimed port)
 *   MODE_PIOIN  COUNT x  in $0x44, %eax (the same exit in the direction a hypercall trap uses)
 *   MODE_MMIO   COUNT x  movl %eax, 0xd0000000 (unbacked guest-physical address)
 *   MODE_HCALL  installs the hypercall page (MSR 0x40000000, 32-bit stubs), then COUNT x
 *               vcpu_op(VCPUOP_is_up, 0) through it
 *   MODE_DONE   exits at once (start-to-done)
 */
        .section .note.Xen, "a"
        .balign 4
        .long 4, 4, 18                  /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .long entry
        .balign 4
        .long 4, 16, 6                  /* XEN_ELFNOTE_GUEST_OS */
        .asciz "Xen"
        .asciz "swiftlet-bench"
        .byte 0

        .text
        .code32
        .globl entry
entry:
        mov $stack_top, %esp
#ifdef MODE_HCALL
        mov $hypercall_page, %eax       /* wrmsr 0x40000000 <- gpa | 0 */
        xor %edx, %edx
        mov $0x40000000, %ecx
        wrmsr
#endif
#ifndef MODE_DONE
        mov $0x504, %dx
        mov $1, %eax
        out %eax, %dx                   /* checkpoint 1 */
        mov $COUNT, %esi
1:
#if defined(MODE_PIO)
        out %eax, $0x44
#elif defined(MODE_PIOIN)
        in $0x44, %eax
#elif defined(MODE_MMIO)
        movl %eax, 0xd0000000
#elif defined(MODE_HCALL)
        mov $3, %ebx                    /* VCPUOP_is_up */
        xor %ecx, %ecx                  /* vCPU 0 */
        call hypercall_page + 24 * 32
#endif
        dec %esi
        jnz 1b
        mov $0x504, %dx
        mov $2, %eax
        out %eax, %dx                   /* checkpoint 2 */
#endif
        xor %eax, %eax
        out %eax, $0xf4                 /* isa-debug-exit: status 1 */
        hlt
        jmp .

        .bss
        .balign 4096
hypercall_page:
        .skip 4096
        .skip 4096
stack_top:
