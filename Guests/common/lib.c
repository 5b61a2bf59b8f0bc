/* Swiftlet guest library: serial output, formatting, check bookkeeping, small libc pieces (lib.h). */
#include "lib.h"

#define COM1 0x3f8
#define LSR_DATA_READY 0x01
#define LSR_THR_EMPTY 0x20

/* Counters and the lock live in .data: the probe's xen64 entry prints before .bss is checked. */
uint64_t n_pass DATA, n_fail DATA;
static volatile uint32_t console_word DATA;

void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    if (p < q) {
        while (n--)
            *p++ = *q++;
    } else {
        while (n--)
            p[n] = q[n];
    }
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p < *q ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int console_trylock(void)
{
    return __atomic_exchange_n(&console_word, 1, __ATOMIC_ACQUIRE) == 0;
}

void console_lock(void)
{
    while (!console_trylock())
        while (console_word)
            __asm__ volatile("pause");
}

void console_unlock(void)
{
    __atomic_store_n(&console_word, 0, __ATOMIC_RELEASE);
}

void serial_putc(char c)
{
    for (unsigned spins = 0; spins < 10000000u; spins++)
        if (inb(COM1 + 5) & LSR_THR_EMPTY)
            break;
    outb(COM1, (uint8_t)c);
}

int serial_getc(void)
{
    while (!(inb(COM1 + 5) & LSR_DATA_READY))
        __asm__ volatile("pause");
    return inb(COM1);
}

void put_bytes(const char *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        serial_putc(p[i]);
}

/* ---- formatting: %s %c %d %u %x with optional '0' flag, width and 'l' ---- */
struct sink {
    char *buf;
    size_t cap, len;
};

static void sink_put(struct sink *s, char c)
{
    if (!s->buf) {
        serial_putc(c);
    } else if (s->len + 1 < s->cap) {
        s->buf[s->len] = c;
    }
    s->len++;
}

static void put_num(struct sink *s, uint64_t v, unsigned base, int width, char pad)
{
    char tmp[24];
    int n = 0;
    do {
        unsigned d = (unsigned)(v % base);
        tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    if (width > 20)
        width = 20;
    while (n < width)
        tmp[n++] = pad;
    while (n)
        sink_put(s, tmp[--n]);
}

static void vformat(struct sink *s, const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            sink_put(s, *fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, lng = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            lng = 1;
            fmt++;
        }
        switch (*fmt) {
        case 'd': {
            int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
            if (v < 0) {
                sink_put(s, '-');
                put_num(s, (uint64_t)0 - (uint64_t)v, 10, width, pad);
            } else {
                put_num(s, (uint64_t)v, 10, width, pad);
            }
            break;
        }
        case 'u':
            put_num(s, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width, pad);
            break;
        case 'x':
            put_num(s, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width, pad);
            break;
        case 'c':
            sink_put(s, (char)va_arg(ap, int));
            break;
        case 's': {
            const char *str = va_arg(ap, const char *);
            while (*str)
                sink_put(s, *str++);
            break;
        }
        case '%':
            sink_put(s, '%');
            break;
        default:
            return;
        }
    }
}

/* Unlocked output, for callers that hold the console lock. */
static void raw_vprint(const char *fmt, va_list ap)
{
    struct sink s = {0, 0, 0};
    vformat(&s, fmt, ap);
}

static void raw_print(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    raw_vprint(fmt, ap);
    va_end(ap);
}

void vprint(const char *fmt, va_list ap)
{
    console_lock();
    raw_vprint(fmt, ap);
    console_unlock();
}

void print(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint(fmt, ap);
    va_end(ap);
}

int ksnprintf(char *buf, size_t cap, const char *fmt, ...)
{
    struct sink s = {buf, cap, 0};
    va_list ap;
    va_start(ap, fmt);
    vformat(&s, fmt, ap);
    va_end(ap);
    if (cap)
        buf[s.len < cap ? s.len : cap - 1] = 0;
    return (int)s.len;
}

/* ---- checks ---- */
void ok(const char *name)
{
    console_lock();
    raw_print("ok %s\n", name);
    n_pass++;
    console_unlock();
}

void ok_note(const char *name, const char *note)
{
    console_lock();
    raw_print("ok %s (%s)\n", name, note);
    n_pass++;
    console_unlock();
}

static void vfail(const char *name, const char *fmt, va_list ap)
{
    console_lock();
    raw_print("FAIL %s: ", name);
    raw_vprint(fmt, ap);
    serial_putc('\n');
    n_fail++;
    console_unlock();
}

void fail(const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(name, fmt, ap);
    va_end(ap);
}

int check(int cond, const char *name, const char *fmt, ...)
{
    if (cond) {
        ok(name);
    } else {
        va_list ap;
        va_start(ap, fmt);
        vfail(name, fmt, ap);
        va_end(ap);
    }
    return cond;
}

int check_eq(const char *name, uint64_t got, uint64_t want)
{
    return check(got == want, name, "got 0x%lx want 0x%lx", got, want);
}

int check_mask(const char *name, uint64_t got, uint64_t mask, uint64_t want)
{
    return check((got & mask) == want, name, "got 0x%lx want 0x%lx under mask 0x%lx", got, want, mask);
}

void summary(void)
{
    print("summary %lu %lu\n", n_pass, n_fail);
}

uint32_t fnv1a(const volatile uint8_t *p, uint64_t n, uint32_t h)
{
    for (uint64_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x01000193u;
    }
    return h;
}

void spin(unsigned long n)
{
    for (volatile unsigned long i = 0; i < n; i++)
        __asm__ volatile("pause");
}

NORETURN void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

NORETURN void poweroff(uint32_t status)
{
    outl(0x500, status);
    spin(1000000);
    /* Still here: not Swiftlet (e.g. QEMU with isa-debug-exit). */
    print("FAIL poweroff ignored: port 0x500 status 0x%x\n", status);
    outl(0xf4, status);
    halt_forever();
}
