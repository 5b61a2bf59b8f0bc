/*
 * Swiftlet ticker guest: a PVH kernel (32-bit protected mode, paging off) that prints
 * "tick 1" .. "tick 40" on COM1, one line every 100 ms of PIT time (slow enough for a
 * test on a slow host to pause it mid-run), then "ticker: done" and powers
 * off through port 0x500 with status 0. Only the boot vCPU runs; any others stay waiting for INIT.
 * The tests pause and resume it through the API: no line may appear while it is paused, and the
 * lines after a resume must continue the count, as in an uninterrupted run.
 *
 * Built with `as --64` into an ELF64 container; the code itself is 32-bit.
 */

        .set COM1, 0x3f8
        .set POWEROFF, 0x500
        .set TICKS, 40
        .set PIT_50MS, 59659                    /* PIT ticks (1.193182 MHz); 16 bits hold at most 54.9 ms */

.include "xennote.inc"                  /* common/xennote.inc (as -I common) */

        .section .note.Xen, "a", @note
        XENNOTE 6,  .asciz, "swiftlet-ticker"   /* GUEST_OS */
        XENNOTE 5,  .asciz, "xen-3.0"           /* XEN_VERSION */
        XENNOTE 8,  .asciz, "generic"           /* LOADER */
        XENNOTE 18, .long, _start               /* PHYS32_ENTRY */

        .text
        .code32
        .globl _start
_start:
        mov $stack_top, %esp
        cld
        mov $msg_start, %eax
        call puts
        mov $1, %esi
1:      mov $PIT_50MS, %ecx
        call pit_wait
        mov $PIT_50MS, %ecx
        call pit_wait
        mov $msg_tick, %eax
        call puts
        mov %esi, %eax
        call putdec
        mov $'\n', %al
        call putc
        inc %esi
        cmp $TICKS, %esi
        jbe 1b
        mov $msg_done, %eax
        call puts
        xor %eax, %eax
        mov $POWEROFF, %dx
        outl %eax, %dx
2:      cli
        hlt
        jmp 2b

.include "console32.inc"            /* putc, puts, putdec: common/console32.inc */
.include "pit32.inc"                /* pit_wait: common/pit32.inc */

        .section .rodata
msg_start:      .asciz "ticker: start\n"
msg_tick:       .asciz "tick "
msg_done:       .asciz "ticker: done\n"

        .bss
        .align 16
stack:  .skip 4096
stack_top:
