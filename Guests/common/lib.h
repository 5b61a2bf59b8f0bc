/*
 * Swiftlet guest library (shared by the probe and the SMP guest): port I/O, COM1 output,
 * a small printf, the check bookkeeping that produces the report lines
 *
 *     ok NAME | ok NAME (NOTE) | FAIL NAME: DETAIL | fact KEY VALUE | summary PASSED FAILED
 *
 * and power-off through Swiftlet's port 0x500. Every line-producing call (print, ok, fail,
 * check*, summary) holds the console lock for the whole call, so CPUs never interleave
 * within one call; serial_putc and put_bytes do not take it.
 */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define DATA __attribute__((section(".data")))
#define NORETURN __attribute__((noreturn))

/* ---- port access ---- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint64_t read_cr2(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

/* ---- small libc pieces ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* ---- console ---- */
void console_lock(void);
int console_trylock(void);
void console_unlock(void);
void serial_putc(char c);
int serial_getc(void);
void put_bytes(const char *p, uint64_t n);
/* %s %c %d %u %x, optional '0' flag, width and 'l' */
void print(const char *fmt, ...);
void vprint(const char *fmt, va_list ap);
int ksnprintf(char *buf, size_t cap, const char *fmt, ...);

/* ---- checks ---- */
extern uint64_t n_pass, n_fail;
void ok(const char *name);
void ok_note(const char *name, const char *note);
void fail(const char *name, const char *fmt, ...);
int check(int cond, const char *name, const char *fmt, ...);
int check_eq(const char *name, uint64_t got, uint64_t want);
int check_mask(const char *name, uint64_t got, uint64_t mask, uint64_t want);
void summary(void);

uint32_t fnv1a(const volatile uint8_t *p, uint64_t n, uint32_t h);
#define FNV_BASIS 0x811c9dc5u

void spin(unsigned long n);
NORETURN void poweroff(uint32_t status);
NORETURN void halt_forever(void);

#endif
