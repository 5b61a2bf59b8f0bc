/*
 * Swiftlet SMP guest: the PVH entry of the boot CPU, the AP trampoline and AP entry, and the
 * exception stubs. Everything runs identity-mapped (page tables: [0, 4 GiB) with 2 MiB pages,
 * 3..4 GiB uncached), so link-time addresses are physical addresses.
 *
 *   pvh_start    BSP, PVH: 32-bit protected mode, paging off, EBX = hvm_start_info
 *   tramp_start  AP after SIPI: real mode at TRAMPOLINE (copied there by the BSP), CS = 0x0800
 *   ap_start32   AP, 32-bit protected mode, reached from the trampoline with a far jump
 *
 * Both CPUs kinds go through enter_long (PAE, CR3, EFER.LME, CR0.PG) and call C on their own
 * stack: smp_main (BSP) or ap_main (AP).
 */
#include "isrstubs.inc"
#include "longmode.inc"
#include "layout.h"

#define MSR_EFER 0xc0000080

/* ---- BSP: PVH entry ---- */
        .section .head.text, "ax"
        .code32
        .globl pvh_start
pvh_start:
        cli
        cld
        mov %ebx, start_info_pa
        mov $bsp_stack_top, %esp

        /* Identity page tables: PML4[0] -> PDPT, PDPT[0..3] -> 4 PDs of 2 MiB pages. */
        IDENTITY_TABLES32 pt_pml4, pt_pdpt, pt_pd    /* common/longmode.inc */

        lgdt gdtr
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        ljmp $KCODE32, $4f
4:      mov $bsp_long, %ebx
        /* fall through */

/* 32-bit, paging off, own GDT loaded, ESP = stack: long mode, then jump to EBX (64-bit code). */
enter_long:
        ENABLE_LONG_MODE pt_pml4      /* common/longmode.inc */
        ljmp $KCODE64, $long_common

        .code64
long_common:
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        mov %ebx, %ebx                          /* zero-extend: upper halves are undefined */
        mov %esp, %esp
        and $-16, %rsp
        xor %ebp, %ebp
        jmp *%rbx

bsp_long:
        call smp_main
        jmp die

ap_long:
        call ap_main
die:    cli
        hlt
        jmp die

/* ---- AP: 32-bit protected mode from the trampoline ---- */
        .code32
ap_start32:
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov $1, %eax
        lock xaddl %eax, ap_stack_next          /* a stack of its own per arrival */
        cmp $AP_STACKS, %eax
        jae 1f
        inc %eax
        shl $AP_STACK_SHIFT, %eax
        add $ap_stacks, %eax
        mov %eax, %esp
        mov $ap_long, %ebx
        jmp enter_long
1:      cli
        hlt
        jmp 1b

/*
 * ---- AP trampoline: copied to TRAMPOLINE by the BSP; entered in real mode with CS = 0x0800 ----
 * It only needs to switch to protected mode: the GDT and the 32-bit code are in the image.
 */
        .code16
        .globl tramp_start, tramp_end
tramp_start:
        cli
        mov %cs, %ax
        mov %ax, %ds
        lgdtl tramp_gdtr - tramp_start
        mov $0x11, %eax                         /* CR0 = PE | ET: also clears CD/NW from INIT */
        mov %eax, %cr0
        ljmpl $KCODE32, $ap_start32
        .balign 4
        .word 0
tramp_gdtr:
        .word gdt_end - gdt - 1
        .long gdt
tramp_end:

/* ---- exception stubs: 256 x 16 bytes, vector = (stub - isr_stubs) / 16 ---- */
        .text
        .code64
        ISR_STUBS                               /* common/isrstubs.inc */

isr_common:
        mov (%rsp), %rdi                        /* vector */
        mov 8(%rsp), %rsi                       /* error code */
        mov 16(%rsp), %rdx                      /* rip */
        and $-16, %rsp
        cld
        call exception_handler
        jmp die

/* ------------------------------------------------------------------------------------------ */
        .data
        FLAT_GDT64                              /* common/longmode.inc */

        .balign 4
        .globl start_info_pa, ap_stack_next
start_info_pa:  .long 0
ap_stack_next:  .long 0

        .bss
        .balign 4096
        .globl pt_pml4, idt_table
pt_pml4:        .skip 4096
pt_pdpt:        .skip 4096
pt_pd:          .skip 4 * 4096
idt_table:      .skip 4096
bsp_stack:      .skip BSP_STACK_SIZE
bsp_stack_top:
ap_stacks:      .skip AP_STACKS << AP_STACK_SHIFT

        .section .note.GNU-stack, "", @progbits
