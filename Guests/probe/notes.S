/* Swiftlet probe: Xen ELF notes (PT_NOTE segment, name "Xen", 4-byte padded name and desc). */

#define VIRT_BASE 0xffffffff80000000

#include "xennote.inc"

        .section .note.Xen, "a", @note
        XENNOTE 6,  .asciz, "swiftlet-probe"                    /* GUEST_OS */
        XENNOTE 7,  .asciz, "1"                                 /* GUEST_VERSION */
        XENNOTE 5,  .asciz, "xen-3.0"                           /* XEN_VERSION */
        XENNOTE 8,  .asciz, "generic"                           /* LOADER */
        XENNOTE 3,  .quad, VIRT_BASE                            /* VIRT_BASE */
        XENNOTE 4,  .quad, 0                                    /* PADDR_OFFSET */
        XENNOTE 1,  .quad, xen64_start                          /* ENTRY (virtual) */
        XENNOTE 18, .long, pvh_start - VIRT_BASE                /* PHYS32_ENTRY (physical) */
        XENNOTE 10, .asciz, "!writable_page_tables|auto_translated_physmap|supervisor_mode_kernel" /* FEATURES */
        XENNOTE 17, .long, (1 << 0) | (1 << 2) | (1 << 3)       /* SUPPORTED_FEATURES */
        XENNOTE 9,  .asciz, "yes"                               /* PAE_MODE */
        XENNOTE 14, .long, 1                                    /* SUSPEND_CANCEL */

        .section .note.GNU-stack, "", @progbits
