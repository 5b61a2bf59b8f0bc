/*
 * Swiftlet xenpvh guest: Xen ELF notes. PVH only (PHYS32_ENTRY) and no HYPERCALL_PAGE: the guest
 * installs its hypercall pages through the MSR. The FEATURES note (nothing required) is what turns
 * Swiftlet's `--xen auto` on for this image.
 */

#include "xennote.inc"

        .section .note.Xen, "a", @note
        XENNOTE 6,  .asciz, "swiftlet-xenpvh"                   /* GUEST_OS */
        XENNOTE 5,  .asciz, "xen-3.0"                           /* XEN_VERSION */
        XENNOTE 8,  .asciz, "generic"                           /* LOADER */
        XENNOTE 18, .long, pvh_start                            /* PHYS32_ENTRY (physical) */
        XENNOTE 10, .asciz, "writable_page_tables|writable_descriptor_tables|auto_translated_physmap|supervisor_mode_kernel" /* FEATURES */

        .section .note.GNU-stack, "", @progbits
