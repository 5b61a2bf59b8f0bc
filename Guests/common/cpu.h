/*
 * CPU helpers and TSC timing shared by the guests that wait on hardware (smp, mboot): cpuid,
 * rdtsc, pause, and the TSC rate, calibrated against PIT channel 2 with CPUID leaves as fallbacks.
 */
#ifndef GUEST_CPU_H
#define GUEST_CPU_H
#include <stdint.h>
#include "lib.h"

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
static inline void pause(void) { __asm__ volatile("pause" ::: "memory"); }

/* TSC ticks per millisecond, and where the figure came from; set by tsc_calibrate(). */
static uint64_t tsc_per_ms;
static const char *tsc_source __attribute__((unused));

/* 10 ms of PIT channel 2 (1.193182 MHz) against the TSC; 0 if the PIT does not count. */
static int pit_calibrate(void)
{
    const uint32_t ticks = 11932;
    uint8_t old = inb(0x61);
    outb(0x61, (uint8_t)((old & ~0x02) | 0x01)); /* gate on, speaker off */
    outb(0x43, 0xb0);                             /* channel 2, lo/hi byte, mode 0, binary */
    outb(0x42, ticks & 0xff);
    outb(0x42, ticks >> 8);
    uint64_t t0 = rdtsc();
    unsigned long loops = 0;
    while (!(inb(0x61) & 0x20) && loops < 20000000UL)
        loops++;
    uint64_t t1 = rdtsc();
    outb(0x61, old);
    if (loops == 0 || loops >= 20000000UL)
        return 0;
    uint64_t per_ms = (t1 - t0) / 10;
    if (per_ms < 50000 || per_ms > 20000000) /* 50 MHz .. 20 GHz */
        return 0;
    tsc_per_ms = per_ms;
    return 1;
}

/* The PIT, else the hypervisor timing leaf 0x40000010, CPUID 0x15, 0x16, else 4 GHz (delays then
   come out long rather than short). */
static void tsc_calibrate(void)
{
    tsc_source = "pit";
    if (pit_calibrate())
        return;
    uint32_t r[4];
    cpuid(0x40000000, 0, r);
    if (r[0] >= 0x40000010) {
        cpuid(0x40000010, 0, r);
        tsc_source = "cpuid-40000010";
        if (r[0]) {
            tsc_per_ms = r[0];
            return;
        }
    }
    cpuid(0, 0, r);
    uint32_t max = r[0];
    if (max >= 0x15) {
        cpuid(0x15, 0, r);
        tsc_source = "cpuid-15";
        if (r[0] && r[1] && r[2]) {
            tsc_per_ms = (uint64_t)r[2] * r[1] / r[0] / 1000;
            return;
        }
    }
    if (max >= 0x16) {
        cpuid(0x16, 0, r);
        tsc_source = "cpuid-16";
        if (r[0]) {
            tsc_per_ms = (uint64_t)r[0] * 1000;
            return;
        }
    }
    tsc_source = "assumed-4ghz";
    tsc_per_ms = 4000000;
}

static void udelay(uint64_t us)
{
    uint64_t end = rdtsc() + us * tsc_per_ms / 1000;
    while (rdtsc() < end)
        pause();
}
#endif
