/*
 * Swiftlet xenhvm32 guest: the PVH entry and the exception stubs. The whole guest runs in 32-bit
 * protected mode with paging off (32-bit PAE paging triple-faults on the project's nested KVM),
 * at physical 0x100000, so link-time addresses are physical addresses and guest pointers passed to
 * hypercalls are physical too.
 */
#include "longmode.inc"
#include "layout.h"

        .section .head.text, "ax"
        .code32
        .globl pvh_start
pvh_start:
        cli
        cld
        mov %ebx, start_info_pa                 /* hvm_start_info */
        lgdt gdtr
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        ljmp $KCODE32, $1f
1:      mov $stack_top, %esp
        xor %ebp, %ebp
        call hvm_main
        .globl die
die:    cli
        hlt
        jmp die

        .text
        .code32
/*
 * 256 x 16-byte stubs, vector = (stub - isr_stubs) / 16: a 0 error code where the CPU pushes
 * none, then the vector, then isr_common.
 */
        .balign 16
        .globl isr_stubs
isr_stubs:
        vector = 0
        .rept 256
        .balign 16, 0xcc
        .if (vector == 8) || (vector == 10) || (vector == 11) || (vector == 12) || (vector == 13) || (vector == 14) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
        .else
        pushl $0
        .endif
        pushl $vector
        jmp isr_common
        vector = vector + 1
        .endr
        .balign 16, 0xcc

/* The event-channel upcall (main.c sets its gate): upcall_handler(), then back to the interrupted code. */
        .globl upcall_stub
upcall_stub:
        pushal
        cld
        call upcall_handler
        popal
        iret

/* [esp] vector, +4 error code, +8 eip: exception_handler(vector, error, eip) does not return. */
isr_common:
        mov (%esp), %eax
        mov 4(%esp), %edx
        mov 8(%esp), %ecx
        and $-16, %esp
        sub $4, %esp
        push %ecx
        push %edx
        push %eax
        cld
        call exception_handler
        jmp die

        .data
        FLAT_GDT64                              /* common/longmode.inc: 0x18 is the 32-bit code segment */

        .balign 4
        .globl start_info_pa
start_info_pa:  .long 0

        .bss
        .balign 4096
        .globl idt_table, stack_top
idt_table:      .skip 2048                      /* 256 8-byte gates */
        .balign 16
stack:          .skip STACK_SIZE
stack_top:

        .section .note.GNU-stack, "", @progbits
