/* Swiftlet SMP guest: Xen ELF notes (PVH only). */

.macro XENNOTE type:req, kind:req, value:vararg
        .balign 4
        .long 2f - 1f                   /* n_namesz */
        .long 4f - 3f                   /* n_descsz */
        .long \type                     /* n_type */
1:      .asciz "Xen"
2:      .balign 4
3:      \kind \value
4:      .balign 4
.endm

        .section .note.Xen, "a", @note
        XENNOTE 6,  .asciz, "swiftlet-smp"                      /* GUEST_OS */
        XENNOTE 7,  .asciz, "1"                                 /* GUEST_VERSION */
        XENNOTE 5,  .asciz, "xen-3.0"                           /* XEN_VERSION */
        XENNOTE 8,  .asciz, "generic"                           /* LOADER */
        XENNOTE 18, .long, pvh_start                            /* PHYS32_ENTRY (physical) */

        .section .note.GNU-stack, "", @progbits
