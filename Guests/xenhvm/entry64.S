/*
 * Swiftlet xenhvm64 guest: the PVH entry (32-bit protected mode, paging off), the switch to long
 * mode on identity page tables ([0, 4 GiB) with 2 MiB pages, 3..4 GiB uncached) and the exception
 * stubs. Everything runs identity-mapped at physical 0x100000; all Xen calls are made from 64-bit
 * mode, with the 64-bit ABI.
 */
#include "isrstubs.inc"
#include "longmode.inc"
#include "layout.h"

        .section .head.text, "ax"
        .code32
        .globl pvh_start
pvh_start:
        cli
        cld
        mov %ebx, start_info_pa                 /* hvm_start_info */
        mov $stack_top, %esp
        lgdt gdtr
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        ljmp $KCODE32, $1f
1:      IDENTITY_TABLES32 pt_pml4, pt_pdpt, pt_pd    /* common/longmode.inc */
        ENABLE_LONG_MODE pt_pml4
        ljmp $KCODE64, $long_entry

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
        call hvm_main
        .globl die
die:    cli
        hlt
        jmp die

        .text
        .code64
/* ---- exception stubs: 256 x 16 bytes, vector = (stub - isr_stubs) / 16 ---- */
        ISR_STUBS                               /* common/isrstubs.inc */

/* The event-channel upcall (main.c sets its gate): upcall_handler() with the caller-saved registers
 * kept, then back. Nine pushes after the 40-byte frame leave rsp 16-aligned for the call. */
        .globl upcall_stub
upcall_stub:
        push %rax
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %r8
        push %r9
        push %r10
        push %r11
        cld
        call upcall_handler
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rax
        iretq

/* [rsp] vector, +8 error code, +16 rip: exception_handler(vector, error, rip) does not return. */
isr_common:
        mov (%rsp), %rdi
        mov 8(%rsp), %rsi
        mov 16(%rsp), %rdx
        and $-16, %rsp
        cld
        call exception_handler
        jmp die

        .data
        FLAT_GDT64                              /* common/longmode.inc */

        .balign 4
        .globl start_info_pa
start_info_pa:  .long 0

        .bss
        .balign 4096
        .globl pt_pml4, idt_table, stack_top
pt_pml4:        .skip 4096
pt_pdpt:        .skip 4096
pt_pd:          .skip 4 * 4096
idt_table:      .skip 4096
stack:          .skip STACK_SIZE
stack_top:

        .section .note.GNU-stack, "", @progbits
