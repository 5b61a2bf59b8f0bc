/*
 * Swiftlet xenvcpu guest: the xen64 entry of the boot vCPU, the entry of the APs started with
 * VCPUOP_initialise + VCPUOP_up, the exception stubs, the GDT and the page tables.
 *
 *   xen_start  boot vCPU: long mode on the VMM's page tables, RSI = start_info (virtual)
 *   ap_start   AP: long mode on our page tables (ctrlreg[3]), RIP/RSP/RDI/RSI from the context
 *
 * Our page tables (built by the boot vCPU before anything else):
 *   [0, 4 GiB)                  identity, 2 MiB pages, 3..4 GiB uncached
 *   VIRT_BASE + [0, 1 GiB)      -> physical [0, 1 GiB) (the image; shares the first PD)
 *   TOP_VA (top 2 MiB)          -> physical [0, 2 MiB) (context pointers that wrap around)
 *   EDGE_VA                     -> edge_page, one 4 KiB page; EDGE_VA + 4 KiB is unmapped
 */
#include "isrstubs.inc"
#include "layout.h"

#define MSR_EFER 0xc0000080
#define MSR_FS_BASE 0xc0000100
#define MSR_GS_BASE 0xc0000101
#define MSR_KERNEL_GS_BASE 0xc0000102

/* ---- boot vCPU ---- */
        .section .head.text, "ax"
        .code64
        .globl xen_start
xen_start:
        cli
        cld
        mov %rsi, boot_rsi(%rip)
        mov %rsp, boot_rsp(%rip)
        mov %cr3, %rax
        mov %rax, boot_cr3(%rip)
        /* .bss is ours to clear: we still run on the VMM's stack, below the image. */
        lea _bss_start(%rip), %rdi
        lea _bss_end(%rip), %rcx
        sub %rdi, %rcx
        shr $3, %rcx
        xor %eax, %eax
        rep stosq
        call build_page_tables
        mov $PA(pt_pml4), %eax
        mov %rax, %cr3
        lgdt gdtr(%rip)
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        lea 1f(%rip), %rax
        pushq $KCODE64
        pushq %rax
        lretq
1:      lea boot_stack_top(%rip), %rsp
        xor %ebp, %ebp
        mov boot_rsi(%rip), %rdi
        call xen_main
2:      cli
        hlt
        jmp 2b

/* Page tables, written through the VIRT_BASE mapping; entries hold physical addresses. */
build_page_tables:
        lea pt_pml4(%rip), %rdi
        mov $PA(pt_pdpt_lo) + 3, %eax
        mov %rax, 0*8(%rdi)
        mov $PA(pt_pdpt_x) + 3, %eax
        mov %rax, 1*8(%rdi)
        mov $PA(pt_pdpt_hi) + 3, %eax
        mov %rax, 511*8(%rdi)
        /* identity [0, 4 GiB) */
        lea pt_pdpt_lo(%rip), %rdi
        mov $PA(pt_pd) + 3, %eax
        xor %ecx, %ecx
1:      mov %rax, (%rdi,%rcx,8)
        add $4096, %rax
        inc %ecx
        cmp $4, %ecx
        jb 1b
        lea pt_pd(%rip), %rdi
        xor %ecx, %ecx
2:      mov %rcx, %rax
        shl $21, %rax
        or $0x83, %rax                          /* P | RW | PS */
        cmp $1536, %ecx                         /* 3 GiB .. 4 GiB: MMIO hole, uncached */
        jb 3f
        or $0x18, %rax                          /* PWT | PCD */
3:      mov %rax, (%rdi,%rcx,8)
        inc %ecx
        cmp $2048, %ecx
        jb 2b
        /* VIRT_BASE -> 0 (1 GiB, the first PD again) and the top 2 MiB -> 0 */
        lea pt_pdpt_hi(%rip), %rdi
        mov $PA(pt_pd) + 3, %eax
        mov %rax, 510*8(%rdi)
        mov $PA(pt_pd_top) + 3, %eax
        mov %rax, 511*8(%rdi)
        lea pt_pd_top(%rip), %rdi
        movq $0x83, 511*8(%rdi)
        /* EDGE_VA -> edge_page (4 KiB), nothing after it */
        lea pt_pdpt_x(%rip), %rdi
        mov $PA(pt_pd_x) + 3, %eax
        mov %rax, (%rdi)
        lea pt_pd_x(%rip), %rdi
        mov $PA(pt_pt_x) + 3, %eax
        mov %rax, (%rdi)
        lea pt_pt_x(%rip), %rdi
        mov $PA(edge_page) + 3, %eax
        mov %rax, (%rdi)
        ret

/* ---- the hypercall page: XEN_ELFNOTE_HYPERCALL_PAGE; ud2 until the VMM writes the stubs ---- */
        .section .hypercall_page, "ax"
        .balign 4096
        .globl hypercall_page
hypercall_page:
        .fill 2048, 2, 0x0b0f

/* ---- AP: started by VCPUOP_up in long mode, CS 0x10, GDTR 0x500, IDTR limit 0 ---- */
        .text
        .code64
.macro PUSH_MSR msr
        mov $\msr, %ecx
        rdmsr
        shl $32, %rdx
        or %rdx, %rax
        push %rax
.endm
.macro PUSH_SEG seg
        xor %eax, %eax
        mov \seg, %ax
        push %rax
.endm

        .globl ap_start
ap_start:
        /* Save the entry state on the stack the context gave us (struct ap_frame in main.c). */
        pushfq
        push %rax
        push %rbx
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %rbp
        push %r8
        push %r9
        push %r10
        push %r11
        push %r12
        push %r13
        push %r14
        push %r15
        lea 128(%rsp), %rax                     /* rsp at entry */
        push %rax
        mov %cr0, %rax
        push %rax
        mov %cr3, %rax
        push %rax
        mov %cr4, %rax
        push %rax
        PUSH_MSR MSR_EFER
        PUSH_MSR MSR_FS_BASE
        PUSH_MSR MSR_GS_BASE
        PUSH_MSR MSR_KERNEL_GS_BASE
        PUSH_SEG %cs
        PUSH_SEG %ds
        PUSH_SEG %es
        PUSH_SEG %ss
        PUSH_SEG %fs
        PUSH_SEG %gs
        sub $16, %rsp
        sgdt (%rsp)
        sub $16, %rsp
        sidt (%rsp)
        mov %rsp, %rbx
        /* Our GDT (same selectors), then C. */
        cld
        lgdt gdtr(%rip)
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        lea 1f(%rip), %rax
        pushq $KCODE64
        pushq %rax
        lretq
1:      mov %rbx, %rdi
        and $-16, %rsp
        call ap_main
2:      cli
        hlt
        jmp 2b

/* Addresses registered with set_callbacks / callback_op (never called). */
        .globl callback_event, callback_failsafe, callback_syscall
        .balign 16
callback_event:
        ud2
        .balign 16
callback_failsafe:
        ud2
        .balign 16
callback_syscall:
        ud2

/* ---- exception stubs: 256 x 16 bytes, vector = (stub - isr_stubs) / 16 ---- */
        ISR_STUBS                               /* common/isrstubs.inc */

isr_common:
        mov (%rsp), %rdi                        /* vector */
        mov 8(%rsp), %rsi                       /* error code */
        mov 16(%rsp), %rdx                      /* rip */
        mov %rsp, %rcx                          /* tells which stack, so which vCPU */
        and $-16, %rsp
        cld
        call exception_handler
1:      cli
        hlt
        jmp 1b

/* ------------------------------------------------------------------------------------------ */
        .data
        .balign 16
gdt:
        .quad 0
        .quad 0x00cf9b000000ffff                /* 0x08: 32-bit code (unused) */
        .quad 0x00af9b000000ffff                /* 0x10: 64-bit code */
        .quad 0x00cf93000000ffff                /* 0x18: flat data */
gdt_end:
        .balign 8
        .word 0, 0, 0
gdtr:
        .word gdt_end - gdt - 1
        .quad gdt

        .balign 8
        .globl boot_rsi, boot_rsp, boot_cr3
boot_rsi:       .quad 0
boot_rsp:       .quad 0
boot_cr3:       .quad 0

        .bss
        .balign 4096
        .globl pt_pml4, idt_table, edge_page, boot_stack, boot_stack_top
pt_pml4:        .skip 4096
pt_pdpt_lo:     .skip 4096
pt_pdpt_hi:     .skip 4096
pt_pdpt_x:      .skip 4096
pt_pd:          .skip 4 * 4096
pt_pd_top:      .skip 4096
pt_pd_x:        .skip 4096
pt_pt_x:        .skip 4096
edge_page:      .skip 4096
idt_table:      .skip 4096
boot_stack:     .skip BOOT_STACK_SIZE
boot_stack_top:

        .section .note.GNU-stack, "", @progbits
