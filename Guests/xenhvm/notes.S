/*
 * Swiftlet xenhvm guests: Xen ELF notes, the same for xenhvm32.elf (ELF32) and xenhvm64.elf
 * (ELF64). PVH only (PHYS32_ENTRY); no HYPERCALL_PAGE, no ENTRY: the guest finds the Xen CPUID
 * leaves and installs its hypercall page through the MSR like an HVM guest. The FEATURES note
 * (nothing required) is what turns Swiftlet's `--xen auto` on for these images.
 */

#include "xennote.inc"

        .section .note.Xen, "a", @note
        XENNOTE 6,  .asciz, "swiftlet-xenhvm"                   /* GUEST_OS */
        XENNOTE 5,  .asciz, "xen-3.0"                           /* XEN_VERSION */
        XENNOTE 8,  .asciz, "generic"                           /* LOADER */
        XENNOTE 18, .long, pvh_start                            /* PHYS32_ENTRY (physical) */
        XENNOTE 10, .asciz, "writable_page_tables|auto_translated_physmap" /* FEATURES */

        .section .note.GNU-stack, "", @progbits
