/*
 * Swiftlet probe: the three entry points.
 *
 *   startup_64  Linux 64-bit boot protocol, physical 0x100200 (ELF e_entry), runs identity-mapped
 *   pvh_start   PVH 32-bit entry (XEN_ELFNOTE_PHYS32_ENTRY), paging off
 *   xen64_start Xen 64-bit PV-style entry (XEN_ELFNOTE_ENTRY), runs at VIRT_BASE + physical
 *
 * Each saves the entry state into st_* (in .data) before touching anything else, builds the
 * probe's own page tables (identity 0..8 GiB with 2 MiB pages, 3..4 GiB uncached, plus
 * VIRT_BASE -> 0 for 1 GiB), loads the probe's GDT and calls probe_main(protocol) at the high
 * virtual address on the probe's own stack.
 */
#include "isrstubs.inc"
#include "longmode.inc"

#define VIRT_BASE 0xffffffff80000000
#define PA(x) ((x) - VIRT_BASE)

#define MSR_EFER 0xc0000080
#define MSR_FS_BASE 0xc0000100
#define MSR_GS_BASE 0xc0000101
#define MSR_KERNEL_GS_BASE 0xc0000102

#define KCODE 0x08
#define KDATA 0x10

/* ------------------------------------------------------------------------------------------ */
        .section .head.text, "ax"
        .code64
        .globl _head
_head:
        /* Nothing is entered here: the Linux entry must sit at offset 0x200 of the image. */
        .fill 0x200, 1, 0xcc

/* ---- Linux 64-bit entry: long mode, identity-mapped, RSI = boot_params (physical) ---- */
        .globl startup_64
startup_64:
        mov %rsi, st_si(%rip)
        mov %rsp, st_sp(%rip)
        mov %rax, st_ax(%rip)
        lea boot_stack_top(%rip), %rsp          /* identity address of our stack */
        pushfq
        popq st_flags(%rip)
        cli                                     /* the probe never takes interrupts */
        cld
        call save_state64
        movq $3, st_protocol(%rip)
        call build_page_tables
        jmp switch_to_own

/* ---- Xen 64-bit entry: long mode, running at VIRT_BASE + x, RSI = &start_info (virtual) ---- */
        .globl xen64_start
xen64_start:
        mov %rsi, st_si(%rip)
        mov %rsp, st_sp(%rip)
        mov %rax, st_ax(%rip)
        pushfq                                  /* on the VMM's stack */
        popq st_flags(%rip)
        cli                                     /* the probe never takes interrupts */
        cld
        /* Write and read back the 4 KiB below the VMM's RSP (before any call uses it). */
        mov %rsp, %rdi
        lea -4096(%rdi), %rsi
        mov %rsi, %rcx
1:      mov %rcx, %rax
        not %rax
        mov %rax, (%rcx)
        add $8, %rcx
        cmp %rdi, %rcx
        jb 1b
        xor %edx, %edx
        mov %rsi, %rcx
2:      mov %rcx, %rax
        not %rax
        cmp %rax, (%rcx)
        je 3f
        inc %rdx
3:      add $8, %rcx
        cmp %rdi, %rcx
        jb 2b
        mov %rdx, st_stack_bad(%rip)
        call save_state64                       /* first call on the VMM's stack */
        movq $2, st_protocol(%rip)
        /* Our own GDT (its virtual address is mapped by the VMM's high map, like our code). */
        lgdt gdtr64(%rip)
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        lea 4f(%rip), %rax
        pushq $KCODE
        pushq %rax
        lretq
4:      /* Copy what we need while the VMM's page tables are live (C, still on its stack). */
        mov %rsp, %rbx
        and $-16, %rsp
        call xen64_early
        mov %rbx, %rsp
        movq $1, st_call_returned(%rip)
        lea boot_stack_top(%rip), %rsp          /* virtual address of our stack */
        call build_page_tables
        jmp switch_to_own

/* ---- common 64-bit tail: own page tables, own GDT, high addresses, probe_main ---- */
switch_to_own:
        mov $PA(pt_pml4), %eax
        mov %rax, %cr3
        lgdt gdtr64(%rip)
        mov $KDATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        movabs $1f, %rax                        /* high virtual address */
        pushq $KCODE
        pushq %rax
        lretq
1:      lea boot_stack_top(%rip), %rsp          /* now the high alias */
        xor %ebp, %ebp
        mov st_protocol(%rip), %edi
        call probe_main
2:      cli
        hlt
        jmp 2b

/* Save control registers, MSRs, selectors and descriptor-table registers (64-bit mode). */
.macro RDMSR64 msr, dst
        mov $\msr, %ecx
        rdmsr
        shl $32, %rdx
        or %rdx, %rax
        mov %rax, \dst(%rip)
.endm

save_state64:
        mov %cr0, %rax
        mov %rax, st_cr0(%rip)
        mov %cr3, %rax
        mov %rax, st_cr3(%rip)
        mov %cr4, %rax
        mov %rax, st_cr4(%rip)
        RDMSR64 MSR_EFER, st_efer
        RDMSR64 MSR_FS_BASE, st_fsbase
        RDMSR64 MSR_GS_BASE, st_gsbase
        RDMSR64 MSR_KERNEL_GS_BASE, st_kgsbase
        mov %cs, st_cs(%rip)
        mov %ds, st_ds(%rip)
        mov %es, st_es(%rip)
        mov %ss, st_ss(%rip)
        mov %fs, st_fs(%rip)
        mov %gs, st_gs(%rip)
        str st_tr(%rip)
        sgdt st_gdtr(%rip)
        sidt st_idtr(%rip)
        ret

/*
 * Build the probe's page tables, writing through whatever mapping RIP-relative addressing
 * gives (identity for Linux, VIRT_BASE for xen64); the entries hold physical addresses,
 * which are link-time constants.
 */
build_page_tables:
        lea pt_pml4(%rip), %rdi
        xor %eax, %eax
        mov $(3 * 512), %ecx                    /* pml4, pdpt_lo, pdpt_hi */
        rep stosq
        lea pt_pml4(%rip), %rdi
        mov $(PA(pt_pdpt_lo) + 3), %eax
        mov %rax, (%rdi)
        mov $(PA(pt_pdpt_hi) + 3), %eax
        mov %rax, 511*8(%rdi)
        lea pt_pdpt_lo(%rip), %rdi
        mov $(PA(pt_pd) + 3), %eax
        xor %ecx, %ecx
1:      mov %rax, (%rdi,%rcx,8)
        add $4096, %rax
        inc %ecx
        cmp $8, %ecx
        jb 1b
        lea pt_pdpt_hi(%rip), %rdi
        mov $(PA(pt_pd) + 3), %eax
        mov %rax, 510*8(%rdi)
        lea pt_pd(%rip), %rdi
        xor %ecx, %ecx
2:      mov %rcx, %rax
        shl $21, %rax
        or $0x83, %rax                          /* P | RW | PS */
        cmp $1536, %ecx                         /* 3 GiB .. 4 GiB: MMIO hole, uncached */
        jb 3f
        cmp $2048, %ecx
        jae 3f
        or $0x18, %rax                          /* PWT | PCD */
3:      mov %rax, (%rdi,%rcx,8)
        inc %ecx
        cmp $4096, %ecx
        jb 2b
        ret

/* ---- PVH 32-bit entry: protected mode, paging off, EBX = hvm_start_info ---- */
        .code32
        .globl pvh_start
pvh_start:
        mov %ebx, PA(st_bx)
        mov %esp, PA(st_sp)
        mov %eax, PA(st_ax)
        mov $PA(boot_stack_top), %esp
        pushfl
        popl PA(st_flags)
        cli
        cld
        mov %cr0, %eax
        mov %eax, PA(st_cr0)
        mov %cr3, %eax
        mov %eax, PA(st_cr3)
        mov %cr4, %eax
        mov %eax, PA(st_cr4)
        mov %cs, PA(st_cs)
        mov %ds, PA(st_ds)
        mov %es, PA(st_es)
        mov %ss, PA(st_ss)
        mov %fs, PA(st_fs)
        mov %gs, PA(st_gs)
        str PA(st_tr)
        sgdt PA(st_gdtr)
        sidt PA(st_idtr)
        movl $1, PA(st_protocol)

        /* Page tables (physical addresses, paging is off). */
        mov $PA(pt_pml4), %edi
        xor %eax, %eax
        mov $(3 * 1024), %ecx
        rep stosl
        movl $(PA(pt_pdpt_lo) + 3), PA(pt_pml4)
        movl $(PA(pt_pdpt_hi) + 3), PA(pt_pml4) + 511*8
        mov $(PA(pt_pd) + 3), %eax
        xor %ecx, %ecx
1:      mov %eax, PA(pt_pdpt_lo)(,%ecx,8)
        add $4096, %eax
        inc %ecx
        cmp $8, %ecx
        jb 1b
        movl $(PA(pt_pd) + 3), PA(pt_pdpt_hi) + 510*8
        xor %ecx, %ecx
2:      mov %ecx, %eax
        shl $21, %eax
        or $0x83, %eax
        cmp $1536, %ecx
        jb 3f
        cmp $2048, %ecx
        jae 3f
        or $0x18, %eax
3:      mov %ecx, %edx
        shr $11, %edx
        mov %eax, PA(pt_pd)(,%ecx,8)
        mov %edx, PA(pt_pd) + 4(,%ecx,8)
        inc %ecx
        cmp $4096, %ecx
        jb 2b

        /* Long mode in the standard order: GDT, PAE, CR3, EFER.LME, CR0.PG. */
        lgdt PA(gdtr32)
        ENABLE_LONG_MODE PA(pt_pml4)      /* common/longmode.inc */
        ljmp $KCODE, $PA(pvh_long)

        .code64
pvh_long:
        jmp switch_to_own

/* ---- exception stubs: 256 x 16 bytes, vector = (stub - isr_stubs) / 16 ---- */
        .text
        ISR_STUBS                               /* common/isrstubs.inc */

isr_common:
        mov (%rsp), %rdi                        /* vector */
        mov 8(%rsp), %rsi                       /* error code */
        mov 16(%rsp), %rdx                      /* rip */
        and $-16, %rsp
        cld
        call exception_handler
1:      cli
        hlt
        jmp 1b

/* ------------------------------------------------------------------------------------------ */
        .data
        .balign 8
gdt:
        .quad 0
        .quad 0x00af9b000000ffff                /* 0x08: 64-bit code */
        .quad 0x00cf93000000ffff                /* 0x10: flat data */
        .quad 0x00cf9b000000ffff                /* 0x18: 32-bit code (unused) */
gdt_end:
        .balign 8
        .word 0, 0, 0
gdtr64:
        .word gdt_end - gdt - 1
        .quad gdt
        .balign 8
        .word 0, 0, 0
gdtr32:
        .word gdt_end - gdt - 1
        .long PA(gdt)

        .balign 8
.macro SLOT name
        .globl \name
\name:  .quad 0
.endm
        SLOT st_protocol
        SLOT st_bx
        SLOT st_si
        SLOT st_sp
        SLOT st_ax
        SLOT st_flags
        SLOT st_cr0
        SLOT st_cr3
        SLOT st_cr4
        SLOT st_efer
        SLOT st_fsbase
        SLOT st_gsbase
        SLOT st_kgsbase
        SLOT st_cs
        SLOT st_ds
        SLOT st_es
        SLOT st_ss
        SLOT st_fs
        SLOT st_gs
        SLOT st_tr
        SLOT st_stack_bad
        SLOT st_call_returned
        .globl st_gdtr, st_idtr
st_gdtr: .quad 0, 0
st_idtr: .quad 0, 0

/*
 * Early .bss: written before the .bss check and never zeroed by C (page tables, IDT, stack).
 * The rest of .bss (from _bss_zero_start) is checked for zero and then cleared.
 */
        .section .bss.early, "aw", @nobits
        .balign 4096
        .globl pt_pml4, pt_pdpt_lo, pt_pdpt_hi, pt_pd, idt_table, boot_stack_top
pt_pml4:        .skip 4096
pt_pdpt_lo:     .skip 4096
pt_pdpt_hi:     .skip 4096
pt_pd:          .skip 8 * 4096
idt_table:      .skip 4096
boot_stack:     .skip 16384
boot_stack_top:

        .section .note.GNU-stack, "", @progbits
