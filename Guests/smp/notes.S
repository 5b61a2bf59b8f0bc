/* Swiftlet SMP guest: Xen ELF notes (PVH only). */

#include "xennote.inc"

        .section .note.Xen, "a", @note
        XENNOTE 6,  .asciz, "swiftlet-smp"                      /* GUEST_OS */
        XENNOTE 7,  .asciz, "1"                                 /* GUEST_VERSION */
        XENNOTE 5,  .asciz, "xen-3.0"                           /* XEN_VERSION */
        XENNOTE 8,  .asciz, "generic"                           /* LOADER */
        XENNOTE 18, .long, pvh_start                            /* PHYS32_ENTRY (physical) */

        .section .note.GNU-stack, "", @progbits
