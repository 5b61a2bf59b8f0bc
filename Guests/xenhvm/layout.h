/* Swiftlet xenhvm guests: constants shared by the entry code and main.c (both builds). */
#ifndef XENHVM_LAYOUT_H
#define XENHVM_LAYOUT_H

#define KCODE64 0x08 /* GDT selectors (common/longmode.inc FLAT_GDT64) */
#define KDATA 0x10
#define KCODE32 0x18

#define STACK_SIZE 16384

#endif
