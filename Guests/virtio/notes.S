/* Swiftlet virtio guest: Xen ELF notes for a PVH entry (no FEATURES: no Xen interface wanted). */
#include "xennote.inc"

        .section .note.Xen, "a", @note
        XENNOTE 6,  .asciz, "swiftlet-virtio"   /* GUEST_OS */
        XENNOTE 5,  .asciz, "xen-3.0"           /* XEN_VERSION */
        XENNOTE 8,  .asciz, "generic"           /* LOADER */
        XENNOTE 18, .long, pvh_start            /* PHYS32_ENTRY (physical) */

        .section .note.GNU-stack, "", @progbits
