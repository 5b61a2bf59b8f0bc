/*
 * Swiftlet virtio guest: the PVH entry. The whole guest runs in 32-bit protected mode with paging
 * off, at physical 0x100000: the virtio-mmio windows below 4 GiB are reached at their physical
 * addresses, as the virtio issue requires of Swiftlet's layout.
 */
        .section .head.text, "ax"
        .code32
        .globl pvh_start
pvh_start:
        cli
        cld
        mov $stack_top, %esp
        xor %ebp, %ebp
        push %ebx                               /* hvm_start_info */
        call virtio_main
1:      cli
        hlt
        jmp 1b

        .bss
        .balign 16
stack:  .skip 16384
stack_top:

        .section .note.GNU-stack, "", @progbits
