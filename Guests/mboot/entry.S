/*
 * Swiftlet Multiboot guest: the 32-bit entry of the boot CPU, the exception stubs, the AP
 * trampoline and the AP's 32-bit code. Paging stays off throughout: link-time addresses are
 * physical addresses.
 *
 *   mboot_start  BSP, Multiboot: 32-bit protected mode, paging off, EAX = 0x2BADB002,
 *                EBX = multiboot info; ESP, GDTR and IDTR must not be trusted
 *   tramp_start  AP after SIPI: real mode, CS = trampoline page >> 4 (copied there by the BSP)
 *   ap_start32   AP, 32-bit protected mode, reached from the trampoline with a far jump
 */
#include "layout.h"

        .section .text.entry, "ax"
        .code32
        .globl mboot_start
mboot_start:
        /* DS/SS are flat per the spec; ESP is not set up by the loader. */
        mov $bsp_stack_top, %esp
        mov %eax, entry_eax
        mov %ebx, entry_ebx
        pushfl
        popl entry_eflags
        cli
        cld
        mov %cr0, %eax
        mov %eax, entry_cr0

        lgdt gdtr
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %fs
        mov %eax, %gs
        mov %eax, %ss
        ljmp $KCODE, $1f
1:      call early_init                         /* main.c: is .bss zero? then the IDT */
        xor %ebp, %ebp
        pushl entry_ebx
        pushl entry_eax
        call mboot_main
        /* fall through: mboot_main does not return */
        .globl halt_loop
halt_loop:
        cli
        hlt
        jmp halt_loop

/* ---- AP: 32-bit protected mode, from the trampoline ---- */
ap_start32:
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %fs
        mov %eax, %gs
        mov %eax, %ss
        lidt idtr
        mov $1, %eax
        lock xaddl %eax, ap_arrivals            /* slot = arrival number */
        cmp $MAX_APS, %eax
        jae halt_loop
        mov %eax, %ecx
        inc %eax
        shl $AP_STACK_SHIFT, %eax
        lea ap_stacks(%eax), %esp               /* a stack of its own, for the exception path */
        mov 0xfee00020, %eax                    /* xAPIC ID register */
        shr $24, %eax
        mov %eax, ap_ids(,%ecx,4)
        mov $1, %eax
        lock xaddl %eax, ap_checked_in          /* after the ID is stored */
        jmp halt_loop

/*
 * ---- AP trampoline: copied to a free page below 1 MiB; entered in real mode with CS = page >> 4 ----
 * It only switches to protected mode: the GDT and the 32-bit code stay in the image.
 */
        .code16
        .globl tramp_start, tramp_end
tramp_start:
        cli
        mov %cs, %ax
        mov %ax, %ds
        lgdtl tramp_gdtr - tramp_start
        mov $0x11, %eax                         /* CR0 = PE | ET; also clears CD/NW left by INIT */
        mov %eax, %cr0
        ljmpl $KCODE, $ap_start32
        .balign 4
        .word 0
tramp_gdtr:
        .word gdt_end - gdt - 1
        .long gdt
tramp_end:

/* ---- exception stubs: 256 x 16 bytes, vector = (stub - isr_stubs) / 16 ---- */
        .text
        .code32
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

isr_common:
        mov 0(%esp), %eax                       /* vector */
        mov 4(%esp), %edx                       /* error code */
        mov 8(%esp), %ecx                       /* eip */
        and $-16, %esp
        cld
        push %ecx
        push %edx
        push %eax
        call exception_handler                  /* does not return */
        jmp halt_loop

/* ------------------------------------------------------------------------------------------ */
        .data
        .balign 16
gdt:
        .quad 0
        .quad 0x00cf9b000000ffff                /* 0x08: flat 32-bit code */
        .quad 0x00cf93000000ffff                /* 0x10: flat data */
gdt_end:
        .balign 4
        .word 0
gdtr:
        .word gdt_end - gdt - 1
        .long gdt
        .balign 4
        .word 0
        .globl idtr
idtr:
        .word 256 * 8 - 1
        .long idt_table

        .balign 4
        .globl entry_eax, entry_ebx, entry_eflags, entry_cr0, ap_arrivals, ap_checked_in
entry_eax:      .long 0
entry_ebx:      .long 0
entry_eflags:   .long 0
entry_cr0:      .long 0
ap_arrivals:    .long 0
ap_checked_in:  .long 0

/* The stack first: everything after bss_checked is checked for zero before it is used. */
        .bss
        .balign 4096
bsp_stack:      .skip BSP_STACK_SIZE
bsp_stack_top:
        .globl bss_checked, idt_table, ap_ids
bss_checked:
ap_stacks:      .skip MAX_APS << AP_STACK_SHIFT
idt_table:      .skip 256 * 8
ap_ids:         .skip MAX_APS * 4

        .section .note.GNU-stack, "", @progbits
