/*
 * Swiftlet demo guest: a tiny PVH kernel (32-bit protected mode, paging off) that prints a greeting,
 * the hvm_start_info version, the RAM size from the PVH memory map and the command line on COM1.
 * If the MP table (else the ACPI MADT) lists more than one CPU, every vCPU then says hello on a line
 * of its own: the BSP wakes each AP with INIT-SIPI-SIPI through the xAPIC, one at a time, and the AP
 * comes up through a real-mode trampoline into 32-bit protected mode. Then it powers off through
 * port 0x500 with status 0.
 *
 * Built with `as --64` into an ELF64 container; the code itself is 32-bit.
 */

        .set COM1, 0x3f8
        .set POWEROFF, 0x500
        .set HVM_START_MAGIC, 0x336ec578
        .set LAPIC, 0xfee00000
        .set TRAMPOLINE, 0x8000                 /* SIPI vector 0x08 */
        .set PIT_10MS, 11932                    /* PIT ticks (1.193182 MHz) */
        .set PIT_1MS, 1193
        .set PIT_200US, 239

/* ---- Xen ELF notes ---- */
.include "xennote.inc"                  /* common/xennote.inc (as -I common) */

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
        call smp
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

.include "console32.inc"            /* putc, puts, putdec: common/console32.inc */

/* ---- SMP: greet from every vCPU ---- */

/* The console lock (no stack needed: APs take it before they have one). */
.macro LOCK
1:      mov $1, %eax
        xchg %eax, print_lock
        test %eax, %eax
        jz 2f
        pause
        jmp 1b
2:
.endm

smp:
        mov $count_cpu, %ebp
        call for_each_cpu
        cmpl $2, ncpus
        jb 1f
        mov LAPIC + 0x20, %eax                  /* the BSP's APIC ID */
        shr $24, %eax
        mov %eax, bsp_id
        push %esi
        mov $tramp_start, %esi
        mov $TRAMPOLINE, %edi
        mov $(tramp_end - tramp_start), %ecx
        rep movsb
        pop %esi
        mov $wake_cpu, %ebp
        call for_each_cpu
1:      ret

count_cpu:
        incl ncpus
        ret

/* Call EBP with EAX = APIC ID for every enabled CPU the MP table lists, or without an MP table
 * the MADT (through hvm_start_info.rsdp_paddr and the XSDT, else the RSDT). ESI = hvm_start_info. */
for_each_cpu:
        mov $0x9fc00, %ebx
        mov $0xa0000, %ecx
        call scan_mp
        jnz 1f
        mov $0xf0000, %ebx
        mov $0x100000, %ecx
        call scan_mp
        jz madt
1:      mov 4(%ebx), %ebx                       /* configuration table */
        movzwl 4(%ebx), %ecx
        add %ebx, %ecx                          /* ECX = end of the base table */
        add $44, %ebx
2:      cmp %ecx, %ebx
        jae 9f
        cmpb $0, (%ebx)                         /* processor: 20 bytes, others 8 */
        jne 3f
        testb $1, 3(%ebx)                       /* enabled */
        jz 4f
        movzbl 1(%ebx), %eax
        call callback
4:      add $12, %ebx
3:      add $8, %ebx
        jmp 2b

madt:
        mov 32(%esi), %ebx                      /* rsdp_paddr */
        test %ebx, %ebx
        jz 9f
        mov 16(%ebx), %eax                      /* RSDT: 4-byte entries */
        mov $4, %edi
        cmpb $2, 15(%ebx)                       /* ACPI 2.0+: the XSDT, 8-byte entries */
        jb 5f
        mov 24(%ebx), %edx
        test %edx, %edx
        jz 5f
        mov %edx, %eax
        mov $8, %edi
5:      mov %eax, %ebx
        test %ebx, %ebx
        jz 9f
        lea 36(%ebx), %edx
        add 4(%ebx), %ebx                       /* EBX = end of the RSDT/XSDT */
11:     cmp %ebx, %edx
        jae 9f
        mov (%edx), %eax
        add %edi, %edx
        cmpl $0x43495041, (%eax)                /* "APIC" */
        jne 11b
        mov %eax, %ebx
        mov 4(%ebx), %ecx
        add %ebx, %ecx                          /* ECX = end of the MADT */
        add $44, %ebx
7:      cmp %ecx, %ebx
        jae 9f
        movzbl (%ebx), %edx
        test %edx, %edx                         /* Local APIC: ID byte 3, flags 4 */
        jnz 8f
        testb $1, 4(%ebx)
        jz 10f
        movzbl 3(%ebx), %eax
        call callback
8:      cmp $9, %edx                            /* Local x2APIC: ID dword 4, flags 8 */
        jne 10f
        testb $1, 8(%ebx)
        jz 10f
        mov 4(%ebx), %eax
        call callback
10:     movzbl 1(%ebx), %edx
        test %edx, %edx
        jz 9f
        add %edx, %ebx
        jmp 7b
9:      ret

callback:
        pusha
        call *%ebp
        popa
        ret

/* EBX = start, ECX = end: ZF clear and EBX = the "_MP_" found, else ZF set. */
scan_mp:
        cmpl $0x5f504d5f, (%ebx)
        je 1f
        add $16, %ebx
        cmp %ecx, %ebx
        jb scan_mp
        xor %ebx, %ebx
1:      test %ebx, %ebx
        ret

/* EAX = APIC ID: the BSP greets, an AP is woken (INIT, INIT deassert, 10 ms, SIPI, 200 us, SIPI)
 * and given 1 s to greet. 0xff is the xAPIC broadcast ID: that one is sent to all but self, and
 * the APs that already greeted come back through the trampoline and halt quietly. */
wake_cpu:
        mov %eax, %ebx
        mov $msg_cpu_hello, %edx
        cmp bsp_id, %eax
        je say_locked
        cmp $0xff, %eax
        ja 9f
        mov $0, %edx
        jb 1f
        mov $0xc0000, %edx                      /* shorthand: all excluding self */
1:      mov $0xc500, %eax                       /* INIT, level, assert */
        call ipi
        mov $0x8500, %eax                       /* INIT, level, deassert */
        call ipi
        mov $PIT_10MS, %ecx
        call pit_wait
        mov $0x608, %eax                        /* STARTUP, vector 0x08 */
        call ipi
        mov $PIT_200US, %ecx
        call pit_wait
        mov $0x608, %eax
        call ipi
        mov $1000, %edi
2:      cmpb $0, greeted(%ebx)
        jne 9f
        mov $PIT_1MS, %ecx
        call pit_wait
        dec %edi
        jnz 2b
        mov $msg_cpu_silent, %edx
say_locked:
        LOCK
        call say
        movl $0, print_lock
9:      ret

/* "  vCPU <EBX><EDX>" */
say:
        mov $msg_cpu, %eax
        call puts
        mov %ebx, %eax
        call putdec
        mov %edx, %eax
        jmp puts

/* ICR: EAX | EDX (shorthand) to APIC ID EBX. */
ipi:
        or %edx, %eax
        mov %ebx, %ecx
        shl $24, %ecx
1:      testl $0x1000, LAPIC + 0x300            /* delivery status */
        jnz 1b
        mov %ecx, LAPIC + 0x310
        mov %eax, LAPIC + 0x300
        ret

.include "pit32.inc"                /* pit_wait: common/pit32.inc */

/* AP: real mode at TRAMPOLINE (CS = 0x0800) -> 32-bit protected mode on the GDT below. */
        .code16
tramp_start:
        cli
        mov %cs, %ax
        mov %ax, %ds
        lgdtl tramp_gdtr - tramp_start
        mov $0x11, %eax                         /* PE | ET (clears CD/NW) */
        mov %eax, %cr0
        ljmpl $0x08, $ap32
tramp_gdtr:
        .word gdt_end - gdt - 1
        .long gdt
tramp_end:
        .code32

ap32:
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        LOCK                                    /* the APs share one stack, under the lock */
        mov $ap_stack_top, %esp
        mov LAPIC + 0x20, %ebx
        shr $24, %ebx
        cmpb $0, greeted(%ebx)
        jne 1f
        mov $msg_cpu_hello, %edx
        call say
        movb $1, greeted(%ebx)
1:      movl $0, print_lock
2:      cli
        hlt
        jmp 2b

        .balign 8
gdt:    .quad 0
        .quad 0x00cf9b000000ffff                /* 0x08: 32-bit code */
        .quad 0x00cf93000000ffff                /* 0x10: data */
gdt_end:

msg_hello:      .asciz "Hello from the Swiftlet demo guest!\n"
msg_booted:     .asciz "  booted by: PVH (hvm_start_info v"
msg_memory:     .asciz ")\n  memory:    "
msg_cmdline:    .asciz " MiB\n  cmdline:   "
msg_none:       .asciz "(none)"
msg_bad:        .asciz "  booted by: unknown (no hvm_start_info magic in EBX)\n"
msg_cpu:        .asciz "  vCPU "
msg_cpu_hello:  .asciz ": hello\n"
msg_cpu_silent: .asciz ": did not answer\n"

        .bss
        .balign 16
stack:  .skip 4096
stack_top:
ap_stack:
        .skip 256
ap_stack_top:
print_lock:     .long 0
bsp_id:         .long 0
ncpus:          .long 0
greeted:        .skip 256

        .section .note.GNU-stack, "", @progbits
