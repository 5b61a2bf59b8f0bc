/*
 * Swiftlet demo guest: a tiny PVH kernel (32-bit protected mode, paging off) that prints a greeting,
 * the hvm_start_info version, the RAM size from the PVH memory map and the command line on COM1,
 * then powers off through port 0x500 with status 0.
 *
 * Built with `as --64` into an ELF64 container; the code itself is 32-bit.
 */

        .set COM1, 0x3f8
        .set POWEROFF, 0x500
        .set HVM_START_MAGIC, 0x336ec578

/* ---- Xen ELF notes ---- */
.macro XENNOTE type:req, kind:req, value:vararg
        .balign 4
        .long 2f - 1f
        .long 4f - 3f
        .long \type
1:      .asciz "Xen"
2:      .balign 4
3:      \kind \value
4:      .balign 4
.endm

        .section .note.Xen, "a", @note
        XENNOTE 6,  .asciz, "swiftlet-demo"     /* GUEST_OS */
        XENNOTE 5,  .asciz, "xen-3.0"           /* XEN_VERSION */
        XENNOTE 8,  .asciz, "generic"           /* LOADER */
        XENNOTE 18, .long, _start               /* PHYS32_ENTRY */

/* ---- code: EBX = physical address of struct hvm_start_info ---- */
        .text
        .code32
        .globl _start
_start:
        mov $stack_top, %esp
        mov %ebx, %esi
        cld
        mov $msg_hello, %eax
        call puts
        cmpl $HVM_START_MAGIC, (%esi)
        jne bad_magic

        mov $msg_booted, %eax
        call puts
        mov 4(%esi), %eax               /* version */
        call putdec
        mov $msg_memory, %eax
        call puts

        /* Sum the RAM (type 1) entries of the memory map into EBP:EDI. */
        xor %edi, %edi
        xor %ebp, %ebp
        cmpl $1, 4(%esi)                /* memmap fields exist from version 1 on */
        jb 3f
        cmpl $0, 44(%esi)               /* memmap_paddr must be below 4 GiB */
        jne 3f
        mov 40(%esi), %ebx              /* memmap_paddr */
        mov 48(%esi), %ecx              /* memmap_entries */
        test %ebx, %ebx
        jz 3f
1:      jecxz 3f
        cmpl $1, 16(%ebx)               /* type */
        jne 2f
        add 8(%ebx), %edi               /* size */
        adc 12(%ebx), %ebp
2:      add $24, %ebx
        dec %ecx
        jmp 1b
3:      add $0x80000, %edi              /* bytes -> MiB, to the nearest: the legacy */
        adc $0, %ebp                    /* hole below 1 MiB is not RAM */
        shrd $20, %ebp, %edi
        mov %edi, %eax
        call putdec
        mov $msg_cmdline, %eax
        call puts

        mov 24(%esi), %eax              /* cmdline_paddr */
        cmpl $0, 28(%esi)
        jne 4f
        test %eax, %eax
        jz 4f
        cmpb $0, (%eax)
        jne 5f
4:      mov $msg_none, %eax
5:      call puts
        mov $'\n', %al
        call putc
        xor %eax, %eax

poweroff:                               /* EAX = exit status */
        mov $POWEROFF, %dx
        outl %eax, %dx
6:      cli
        hlt
        jmp 6b

bad_magic:
        mov $msg_bad, %eax
        call puts
        mov $1, %eax
        jmp poweroff

/* putc: AL -> COM1 once the transmit holding register is empty. */
putc:
        push %edx
        push %eax
        mov $COM1 + 5, %dx
1:      inb %dx, %al
        test $0x20, %al
        jz 1b
        pop %eax
        mov $COM1, %dx
        outb %al, %dx
        pop %edx
        ret

/* puts: NUL-terminated string at EAX. */
puts:
        push %ebx
        mov %eax, %ebx
1:      mov (%ebx), %al
        test %al, %al
        jz 2f
        call putc
        inc %ebx
        jmp 1b
2:      pop %ebx
        ret

/* putdec: EAX as unsigned decimal. */
putdec:
        push %ebx
        push %ecx
        push %edx
        mov $10, %ebx
        xor %ecx, %ecx
1:      xor %edx, %edx
        div %ebx
        push %edx
        inc %ecx
        test %eax, %eax
        jnz 1b
2:      pop %eax
        add $'0', %al
        call putc
        loop 2b
        pop %edx
        pop %ecx
        pop %ebx
        ret

msg_hello:      .asciz "Hello from the Swiftlet demo guest!\n"
msg_booted:     .asciz "  booted by: PVH (hvm_start_info v"
msg_memory:     .asciz ")\n  memory:    "
msg_cmdline:    .asciz " MiB\n  cmdline:   "
msg_none:       .asciz "(none)"
msg_bad:        .asciz "  booted by: unknown (no hvm_start_info magic in EBX)\n"

        .bss
        .balign 16
stack:  .skip 4096
stack_top:

        .section .note.GNU-stack, "", @progbits
