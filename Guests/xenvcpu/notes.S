/* Swiftlet xenvcpu guest: Xen ELF notes (xen64 only: ENTRY and HYPERCALL_PAGE, no PHYS32_ENTRY). */

#define VIRT_BASE 0xffffffff80000000

#include "xennote.inc"

        .section .note.Xen, "a", @note
        XENNOTE 6,  .asciz, "swiftlet-xenvcpu"                  /* GUEST_OS */
        XENNOTE 5,  .asciz, "xen-3.0"                           /* XEN_VERSION */
        XENNOTE 8,  .asciz, "generic"                           /* LOADER */
        XENNOTE 3,  .quad, VIRT_BASE                            /* VIRT_BASE */
        XENNOTE 4,  .quad, 0                                    /* PADDR_OFFSET */
        XENNOTE 1,  .quad, xen_start                            /* ENTRY (virtual) */
        XENNOTE 2,  .quad, hypercall_page                       /* HYPERCALL_PAGE (virtual) */

        .section .note.GNU-stack, "", @progbits
