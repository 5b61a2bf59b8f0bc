/* Swiftlet xenpvh guest: constants shared by entry.S and the C code. */
#ifndef XENPVH_LAYOUT_H
#define XENPVH_LAYOUT_H

#define KCODE64 0x08 /* GDT selectors */
#define KDATA 0x10
#define KCODE32 0x18

#define STACK_SIZE 16384
#define XEN_MSR 0x40000000

#endif
