/*
 * Swiftlet xenpvh guest: the PVH entry and the 32-bit part of the test, the switch to long mode,
 * the exception stubs (with the #GP catcher for wrmsr) and the compatibility-mode wrmsr.
 * Everything runs identity-mapped at physical 0x100000 (page tables: [0, 4 GiB) with 2 MiB
 * pages, 3..4 GiB uncached), so link-time addresses are physical addresses.
 *
 * 32-bit part, protected mode with paging off (results in .data, reported later by main.c):
 *   "xenpvh: entered via pvh" on COM1; CPUID 0x40000000..2 (without the Xen signature the rest
 *   of the 32-bit part is skipped: the MSR would raise #GP and there is no IDT yet); hpage32 filled with ud2 and
 *   installed with wrmsr(0x40000000, hpage32); its 128 stubs compared with the 32-bit stubs;
 *   if they match: xen_version(XENVER_version) with ebx/ecx/edx/esi/edi/ebp recorded after
 *   the call, xen_version(XENVER_extraversion), vcpu_op(VCPUOP_is_up, 0) and
 *   console_io(CONSOLEIO_write, "pvh32 console_io ok\n"), all with the 32-bit ABI.
 */
#include "isrstubs.inc"
#include "longmode.inc"
#include "layout.h"

#define MSR_EFER 0xc0000080
#define COM1 0x3f8

        .section .head.text, "ax"
        .code32
        .globl pvh_start
pvh_start:
        cli
        cld
        mov %ebx, start_info_pa
        mov $stack_top, %esp
        lgdt gdtr
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        ljmp $KCODE32, $1f
1:      mov $banner, %esi
        call puts32

        /* CPUID 0x40000000, 0x40000001, 0x40000002 -> cpuid_l0, cpuid_l1, cpuid_l2 (eax ebx ecx edx) */
        mov $0x40000000, %eax
        mov $cpuid_l0, %edi
        call cpuid32
        mov $0x40000001, %eax
        mov $cpuid_l1, %edi
        call cpuid32
        mov $0x40000002, %eax
        mov $cpuid_l2, %edi
        call cpuid32

        /* No "XenVMMXenVMM": no MSR to write (it would raise #GP, and there is no IDT yet). */
        movl $1, pvh32_skipped
        cmpl $0x566e6558, cpuid_l0 + 4
        jne 9f
        cmpl $0x65584d4d, cpuid_l0 + 8
        jne 9f
        cmpl $0x4d4d566e, cpuid_l0 + 12
        jne 9f
        movl $2, pvh32_skipped

        /* hpage32: ud2 everywhere, then the MSR write (gpa | 0, EDX:EAX) */
        mov $hpage32, %edi
        mov $0x0b0f0b0f, %eax
        mov $1024, %ecx
        rep stosl
        mov $XEN_MSR, %ecx
        mov $hpage32, %eax
        xor %edx, %edx
        wrmsr
        mov $hpage32, %esi
        call check_stubs32
        mov %eax, pvh32_bad_stub
        cmp $-1, %eax
        jne 9f                                  /* the stubs are not there: no calls */

        /* xen_version(XENVER_version, NULL); every register but eax must survive the call */
        xor %ebx, %ebx
        xor %ecx, %ecx
        mov $0x1d1d1d1d, %edx
        mov $0x5e5e5e5e, %esi
        mov $0x7d7d7d7d, %edi
        mov $0xb0b0b0b0, %ebp
        call hpage32 + 17 * 32
        mov %eax, pvh32_version
        mov %ebx, pvh32_regs
        mov %ecx, pvh32_regs + 4
        mov %edx, pvh32_regs + 8
        mov %esi, pvh32_regs + 12
        mov %edi, pvh32_regs + 16
        mov %ebp, pvh32_regs + 20
        mov %esp, pvh32_regs + 24

        /* xen_version(XENVER_extraversion, pvh32_extra): a physical pointer, paging is off */
        mov $1, %ebx
        mov $pvh32_extra, %ecx
        call hpage32 + 17 * 32
        mov %eax, pvh32_extra_rc

        /* vcpu_op(VCPUOP_is_up, 0, NULL) */
        mov $3, %ebx
        xor %ecx, %ecx
        xor %edx, %edx
        call hpage32 + 24 * 32
        mov %eax, pvh32_is_up

        /* console_io(CONSOLEIO_write, len, msg32) */
        xor %ebx, %ebx
        mov $(msg32_end - msg32), %ecx
        mov $msg32, %edx
        call hpage32 + 18 * 32
        mov %eax, pvh32_console_rc
        movl $0, pvh32_skipped

9:      /* Identity page tables: PML4[0] -> PDPT, PDPT[0..3] -> 4 PDs of 2 MiB pages. */
        IDENTITY_TABLES32 pt_pml4, pt_pdpt, pt_pd    /* common/longmode.inc */

        /* Long mode: PAE, CR3, EFER.LME, CR0.PG. */
        ENABLE_LONG_MODE pt_pml4      /* common/longmode.inc */
        ljmp $KCODE64, $long_entry

/* cpuid32: eax = leaf; stores eax, ebx, ecx, edx at (edi). */
cpuid32:
        xor %ecx, %ecx
        cpuid
        mov %eax, 0(%edi)
        mov %ebx, 4(%edi)
        mov %ecx, 8(%edi)
        mov %edx, 12(%edi)
        ret

/* puts32: esi = NUL-terminated string, to COM1. */
puts32:
1:      movzbl (%esi), %eax
        test %al, %al
        jz 3f
        mov %eax, %ebx
        mov $COM1 + 5, %dx
        mov $100000, %ecx
2:      inb %dx, %al
        test $0x20, %al
        loopz 2b
        mov $COM1, %dx
        mov %ebx, %eax
        outb %al, %dx
        inc %esi
        jmp 1b
3:      ret

/*
 * check_stubs32: esi = page. Compares the 128 stubs with the 32-bit stubs
 * (B8 nr32 E5 E8 C3, then 0xCC; stub 23 is 0F 0B then 0xCC). eax = the first bad stub, or -1.
 */
check_stubs32:
        push %ebx
        xor %ecx, %ecx
1:      mov %ecx, %edi
        shl $5, %edi
        add %esi, %edi
        cmp $23, %ecx
        je 2f
        cmpb $0xb8, (%edi)
        jne 8f
        cmp %ecx, 1(%edi)
        jne 8f
        cmpw $0xe8e5, 5(%edi)
        jne 8f
        cmpb $0xc3, 7(%edi)
        jne 8f
        mov $8, %edx
        jmp 3f
2:      cmpw $0x0b0f, (%edi)
        jne 8f
        mov $2, %edx
3:      cmpb $0xcc, (%edi,%edx)
        jne 8f
        inc %edx
        cmp $32, %edx
        jb 3b
        inc %ecx
        cmp $128, %ecx
        jb 1b
        mov $-1, %eax
        pop %ebx
        ret
8:      mov %ecx, %eax
        pop %ebx
        ret

/* ---- 64-bit ---- */
        .code64
long_entry:
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        mov $stack_top, %esp
        xor %ebp, %ebp
        call pvh_main
die:    cli
        hlt
        jmp die

        .text
        .code64
/* int msr_try(uint32_t msr, uint64_t value): wrmsr; 1 if it raised #GP (the handler skips it). */
        .globl msr_try, msr_try_insn
msr_try:
        mov %edi, %ecx
        mov %rsi, %rax
        mov %rsi, %rdx
        shr $32, %rdx
        movl $0, gp_hit(%rip)
msr_try_insn:
        wrmsr
        mov gp_hit(%rip), %eax
        ret

/* void wrmsr_compat(uint32_t msr, uint64_t value): the wrmsr runs in compatibility mode (32-bit CS). */
        .globl wrmsr_compat
wrmsr_compat:
        push %rbx
        mov %edi, %ecx
        mov %rsi, %rax
        mov %rsi, %rdx
        shr $32, %rdx
        lea 1f(%rip), %rbx
        pushq $KCODE32
        pushq %rbx
        lretq
        .code32
1:      wrmsr
        ljmp $KCODE64, $2f
        .code64
2:      pop %rbx
        ret

/* ---- exception stubs: 256 x 16 bytes, vector = (stub - isr_stubs) / 16 ---- */
        ISR_STUBS                               /* common/isrstubs.inc */

/* #GP at msr_try_insn: note it (and its error code), skip the 2-byte wrmsr. Anything else: report. */
isr_common:
        cmpq $13, (%rsp)
        jne 1f
        push %rax
        lea msr_try_insn(%rip), %rax
        cmp %rax, 24(%rsp)                      /* [rsp] rax, +8 vector, +16 error, +24 rip */
        jne 2f
        mov 16(%rsp), %rax
        mov %rax, gp_error(%rip)
        pop %rax
        movl $1, gp_hit(%rip)
        addq $2, 16(%rsp)                       /* [rsp] vector, +8 error, +16 rip */
        add $16, %rsp
        iretq
2:      pop %rax
1:      mov (%rsp), %rdi                        /* vector */
        mov 8(%rsp), %rsi                       /* error code */
        mov 16(%rsp), %rdx                      /* rip */
        and $-16, %rsp
        cld
        call exception_handler
        jmp die

/* ------------------------------------------------------------------------------------------ */
        .section .rodata
banner: .asciz "xenpvh: entered via pvh\n"
msg32:  .ascii "pvh32 console_io ok\n"
msg32_end:

        .data
        FLAT_GDT64                              /* common/longmode.inc */

        .balign 8
        .globl start_info_pa, cpuid_l0, cpuid_l1, cpuid_l2, pvh32_bad_stub, pvh32_skipped, pvh32_version
        .globl pvh32_regs, pvh32_extra, pvh32_extra_rc, pvh32_is_up, pvh32_console_rc, gp_hit, gp_error
start_info_pa:          .long 0
pvh32_bad_stub:         .long 0
pvh32_skipped:          .long 0                 /* 1: no Xen CPUID signature, 2: bad stubs */
pvh32_version:          .long 0
pvh32_extra_rc:         .long 0
pvh32_is_up:            .long 0
pvh32_console_rc:       .long 0
gp_hit:                 .long 0
gp_error:               .quad 0
cpuid_l0:               .long 0, 0, 0, 0
cpuid_l1:               .long 0, 0, 0, 0
cpuid_l2:               .long 0, 0, 0, 0
pvh32_regs:             .long 0, 0, 0, 0, 0, 0, 0        /* ebx ecx edx esi edi ebp esp */
pvh32_extra:            .fill 32, 1, 0xa5

        .bss
        .balign 4096
        .globl pt_pml4, idt_table, hpage32, hpage64, hpage_compat, hpage_bad, stack_top
pt_pml4:        .skip 4096
pt_pdpt:        .skip 4096
pt_pd:          .skip 4 * 4096
hpage32:        .skip 4096
hpage64:        .skip 4096
hpage_compat:   .skip 4096
hpage_bad:      .skip 4096
idt_table:      .skip 4096
stack:          .skip STACK_SIZE
stack_top:

        .section .note.GNU-stack, "", @progbits
