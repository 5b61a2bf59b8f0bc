/*
 * The 64-bit IDT shared by the guests: idt_table (256 gates, defined in each entry.S) pointing at
 * the 16-byte stubs of common/isrstubs.inc (isr_stubs, in each entry.S).
 */
#ifndef GUEST_IDT_H
#define GUEST_IDT_H

#include <stdint.h>

struct idt_gate {
    uint16_t off0, sel;
    uint8_t ist, type;
    uint16_t off1;
    uint32_t off2, zero;
} __attribute__((packed));
extern struct idt_gate idt_table[256];
extern char isr_stubs[];

struct desc_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

/* Point every vector at its stub: present, DPL 0, 64-bit interrupt gate, code selector sel. */
static inline void idt_fill(uint16_t sel)
{
    for (int i = 0; i < 256; i++) {
        uint64_t a = (uint64_t)isr_stubs + 16 * (uint64_t)i;
        idt_table[i].off0 = (uint16_t)a;
        idt_table[i].sel = sel;
        idt_table[i].ist = 0;
        idt_table[i].type = 0x8e; /* present, DPL 0, 64-bit interrupt gate */
        idt_table[i].off1 = (uint16_t)(a >> 16);
        idt_table[i].off2 = (uint32_t)(a >> 32);
        idt_table[i].zero = 0;
    }
}

/* lidt idt_table (on this CPU). */
static inline void idt_lidt(void)
{
    struct desc_ptr d = {sizeof(struct idt_gate) * 256 - 1, (uint64_t)idt_table};
    __asm__ volatile("lidt %0" ::"m"(d) : "memory");
}

#endif
