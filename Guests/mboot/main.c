/*
 * Swiftlet Multiboot guest: a Multiboot 1 kernel written for a QEMU-like PC. It checks what the
 * Multiboot 0.6.96 spec promises (entry state, the multiboot info, modules, memory map), reads
 * QEMU's fw_cfg (legacy I/O interface, ports 0x510/0x511), wakes the APs the way kvm-unit-tests
 * does (INIT, SIPI, SIPI to all but self; the APs check in from 32-bit protected mode) and exits
 * through isa-debug-exit (port 0xf4). 32-bit code, paging off. See Guests/README.md.
 */
#include "lib.h"
#include "cpu.h"
#include "layout.h"

#define MB_BOOT_MAGIC 0x2BADB002u

#define MBI_MEM (1u << 0)
#define MBI_CMDLINE (1u << 2)
#define MBI_MODS (1u << 3)
#define MBI_MMAP (1u << 6)
#define MBI_LOADER (1u << 9)

struct mb_info {
    uint32_t flags;
    uint32_t mem_lower, mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr;
    uint32_t drives_length, drives_addr;
    uint32_t config_table;
    uint32_t boot_loader_name;
    uint32_t apm_table;
    uint32_t vbe_control_info, vbe_mode_info;
    uint16_t vbe_mode, vbe_interface_seg, vbe_interface_off, vbe_interface_len;
};
_Static_assert(sizeof(struct mb_info) == 88, "multiboot info up to the VBE fields");

struct mb_module {
    uint32_t mod_start, mod_end, string, reserved;
};

/* A memory map entry: `size` does not count itself; the next entry is at +size+4. */
struct mb_mmap {
    uint32_t size;
    uint64_t base, length;
    uint32_t type;
} __attribute__((packed));

struct gate32 {
    uint16_t off0, sel;
    uint8_t zero, type;
    uint16_t off1;
} __attribute__((packed));

extern char _image_start[], _end[], _bss_end[], bss_checked[], tramp_start[], tramp_end[], isr_stubs[];
extern struct gate32 idt_table[256];
extern char idtr[];
extern uint32_t entry_eflags, entry_cr0;
extern volatile uint32_t ap_arrivals, ap_checked_in, ap_ids[MAX_APS];

static uint32_t bss_dirty_at DATA; /* address + 1 of the first non-zero .bss byte, 0 if none */
static uint8_t bss_dirty_value DATA;

#define LAPIC_BASE 0xfee00000u
#define LAPIC_ID 0x20
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_INIT 0x500
#define ICR_STARTUP 0x600
#define ICR_BUSY (1u << 12)
#define ICR_ASSERT (1u << 14)
#define ICR_LEVEL (1u << 15)
#define ICR_ALL_BUT_SELF (3u << 18)
#define MSR_APIC_BASE 0x1b
#define APIC_BASE_BSP (1u << 8)
#define APIC_BASE_X2APIC (1u << 10)
#define APIC_BASE_ENABLE (1u << 11)

#define FW_CFG_CTL 0x510
#define FW_CFG_DATA 0x511
#define FW_CFG_SIGNATURE 0x0000
#define FW_CFG_ID 0x0001
#define FW_CFG_RAM_SIZE 0x0003
#define FW_CFG_NB_CPUS 0x0005
#define FW_CFG_MAX_CPUS 0x000f
#define FW_CFG_CMDLINE_SIZE 0x0014
#define FW_CFG_CMDLINE_DATA 0x0015
#define FW_CFG_FILE_DIR 0x0019
#define FW_CFG_FILE_FIRST 0x0020
#define FW_CFG_UNKNOWN 0x0123

#define STR_MAX 4096

/* ---- CPU helpers ---- */
static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}
static inline uint32_t lapic_read(uint32_t off) { return *(volatile uint32_t *)(LAPIC_BASE + off); }
static inline void lapic_write(uint32_t off, uint32_t v) { *(volatile uint32_t *)(LAPIC_BASE + off) = v; }

/* ---- before anything else (called from entry.S): is .bss zero? then the IDT ---- */
void early_init(void);
void early_init(void)
{
    for (volatile uint8_t *p = (volatile uint8_t *)bss_checked; p < (volatile uint8_t *)_bss_end; p++) {
        if (*p) {
            bss_dirty_at = (uint32_t)p + 1;
            bss_dirty_value = *p;
            break;
        }
    }
    for (int i = 0; i < 256; i++) {
        uint32_t a = (uint32_t)isr_stubs + 16 * (uint32_t)i;
        idt_table[i].off0 = (uint16_t)a;
        idt_table[i].sel = KCODE;
        idt_table[i].zero = 0;
        idt_table[i].type = 0x8e; /* present, DPL 0, 32-bit interrupt gate */
        idt_table[i].off1 = (uint16_t)(a >> 16);
    }
    __asm__ volatile("lidt %0" ::"m"(*idtr) : "memory");
}

/* ---- exit: isa-debug-exit, status (code << 1) | 1 ---- */
static NORETURN void exit_with(uint32_t code)
{
    outl(EXIT_PORT, code);
    halt_forever();
}

void exception_handler(uint32_t vector, uint32_t error, uint32_t eip);
void exception_handler(uint32_t vector, uint32_t error, uint32_t eip)
{
    uint32_t cpu = lapic_read(LAPIC_ID) >> 24;
    /* Only the BSP prints otherwise; if the lock stays taken, the BSP faulted while holding it. */
    for (unsigned long i = 0; i < 10000000ul && !console_trylock(); i++)
        pause();
    console_unlock();
    fail("exception", "vector %u eip=0x%x error=0x%x cpu=%u", vector, eip, error, cpu);
    summary();
    exit_with(EXIT_FAILURE_CODE);
}


/* ---- strings and numbers ---- */
static int streq(const char *a, const char *b) { return strlen(a) == strlen(b) && memcmp(a, b, strlen(a)) == 0; }

/* Copies the NUL-terminated string at physical address pa (at most STR_MAX bytes with the NUL). */
static int copy_str(char *dst, uint32_t pa, uint32_t *len)
{
    const volatile char *s = (const volatile char *)pa;
    for (uint32_t i = 0; i < STR_MAX; i++) {
        dst[i] = s[i];
        if (!s[i]) {
            *len = i;
            return 1;
        }
    }
    dst[STR_MAX - 1] = 0;
    *len = STR_MAX - 1;
    return 0;
}

/* Is w one of the space-separated words of s? */
static int has_word(const char *s, const char *w)
{
    size_t wl = strlen(w);
    while (*s) {
        while (*s == ' ')
            s++;
        const char *b = s;
        while (*s && *s != ' ')
            s++;
        if ((size_t)(s - b) == wl && memcmp(b, w, wl) == 0)
            return 1;
    }
    return 0;
}

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return 0;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (size_t i = 2; i < n; i++) {
            char c = s[i];
            uint32_t d;
            if (c >= '0' && c <= '9')
                d = (uint32_t)(c - '0');
            else if (c >= 'a' && c <= 'f')
                d = (uint32_t)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                d = (uint32_t)(c - 'A' + 10);
            else
                return 0;
            v = (v << 4) | d;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            if (s[i] < '0' || s[i] > '9')
                return 0;
            v = v * 10 + (uint64_t)(s[i] - '0');
        }
    }
    *out = v;
    return 1;
}

/* ---- memory ranges ---- */
struct range {
    uint64_t start, end;
    const char *what;
};

#define MAX_RAM 128
static struct range ram[MAX_RAM]; /* type-1 entries of the memory map */
static int n_ram;

#define MAX_USED 96
static struct range used[MAX_USED]; /* boot structures and modules: the trampoline avoids them */
static int n_used;

static void add_used(const char *what, uint64_t start, uint64_t len)
{
    if (n_used < MAX_USED && len)
        used[n_used++] = (struct range){start, start + len, what};
}

static int overlaps(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1) { return a0 < b1 && b0 < a1; }

/* The end of the run of type-1 entries that contains addr (entries may be split), or addr. */
static uint64_t ram_run_end(uint64_t addr)
{
    for (int progress = 1; progress;) {
        progress = 0;
        for (int i = 0; i < n_ram; i++) {
            if (ram[i].start <= addr && addr < ram[i].end) {
                addr = ram[i].end;
                progress = 1;
            }
        }
    }
    return addr;
}

static int in_ram(uint64_t start, uint64_t end)
{
    return end <= start || ram_run_end(start) >= end;
}

/* ---- the command line: "KERNELPATH key=value ..." ---- */
static char mb_cmdline[STR_MAX];
static const char *mb_args = ""; /* after the first word */

/* The value of the last `key=` among the words after the kernel path, or NULL. */
static const char *opt(const char *key, size_t *vlen)
{
    size_t kl = strlen(key);
    const char *found = 0;
    const char *p = mb_args;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *w = p;
        while (*p && *p != ' ')
            p++;
        if ((size_t)(p - w) >= kl && memcmp(w, key, kl) == 0) {
            found = w + kl;
            *vlen = (size_t)(p - w) - kl;
        }
    }
    return found;
}

static int opt_u64(const char *key, uint64_t *v)
{
    size_t n;
    const char *s = opt(key, &n);
    if (!s)
        return 0;
    if (!parse_u64(s, n, v)) {
        fail("cmdline", "%s value is not a number", key);
        return 0;
    }
    return 1;
}

/* ---- fw_cfg, legacy I/O ---- */
static void fw_select(uint16_t key) { outw(FW_CFG_CTL, key); }
static void fw_read(void *buf, uint32_t n)
{
    uint8_t *p = buf;
    while (n--)
        *p++ = inb(FW_CFG_DATA);
}
static uint64_t fw_le(uint16_t key, int n)
{
    uint8_t b[8];
    fw_select(key);
    fw_read(b, (uint32_t)n);
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}
static uint32_t be32(const uint8_t *b) { return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]; }
static int memchr_nul(const char *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (!s[i])
            return 1;
    return 0;
}
static int all_zero(const uint8_t *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

static uint64_t fw_ram, fw_cpus = 1;
static char fw_cmdline[STR_MAX];
static int fw_cmdline_ok;

static void check_fw_cfg(void)
{
    uint8_t sig[4], past[8];
    fw_select(FW_CFG_SIGNATURE);
    fw_read(sig, 4);
    fw_read(past, 8);
    check(memcmp(sig, "QEMU", 4) == 0, "fwcfg-signature", "got %02x %02x %02x %02x, want \"QEMU\"", sig[0], sig[1],
          sig[2], sig[3]);
    check(all_zero(past, 8), "fwcfg-read-past-end", "the 8 bytes after the signature are not zero");

    uint32_t id = (uint32_t)fw_le(FW_CFG_ID, 4);
    print("fact fwcfg.id 0x%x\n", id);
    check(id & 1, "fwcfg-id", "got 0x%x, want bit 0 (traditional interface)", id);

    fw_ram = fw_le(FW_CFG_RAM_SIZE, 8);
    print("fact fwcfg.ram %lu\n", fw_ram);
    check(fw_ram >= 0x100000, "fwcfg-ram", "RAM size %lu bytes", fw_ram);

    fw_cpus = fw_le(FW_CFG_NB_CPUS, 2);
    uint64_t max_cpus = fw_le(FW_CFG_MAX_CPUS, 2);
    print("fact fwcfg.cpus %lu\n", fw_cpus);
    print("fact fwcfg.maxcpus %lu\n", max_cpus);
    check(fw_cpus >= 1, "fwcfg-cpus", "number of CPUs %lu", fw_cpus);
    check(max_cpus >= fw_cpus, "fwcfg-maxcpus", "max CPUs %lu < number of CPUs %lu", max_cpus, fw_cpus);
    if (fw_cpus == 0)
        fw_cpus = 1;

    uint32_t size = (uint32_t)fw_le(FW_CFG_CMDLINE_SIZE, 4);
    print("fact fwcfg.cmdline_size %u\n", size);
    if (size > STR_MAX) {
        fail("fwcfg-cmdline", "size %u is more than this guest reads (%u)", size, STR_MAX);
    } else {
        fw_select(FW_CFG_CMDLINE_DATA);
        fw_read(fw_cmdline, size);
        if (size == 0) {
            fw_cmdline[0] = 0;
            fw_cmdline_ok = 1;
            ok_note("fwcfg-cmdline", "size 0");
        } else {
            fw_cmdline_ok = fw_cmdline[size - 1] == 0 && strlen(fw_cmdline) == size - 1;
            check(fw_cmdline_ok, "fwcfg-cmdline", "%u bytes, the last or only the last is not NUL", size);
            fw_cmdline[size - 1] = 0;
        }
        print("fact fwcfg.cmdline %s\n", fw_cmdline);
    }

    uint8_t hdr[4];
    fw_select(FW_CFG_FILE_DIR);
    fw_read(hdr, 4);
    uint32_t count = be32(hdr);
    print("fact fwcfg.files %u\n", count);
    if (count > 4096) {
        fail("fwcfg-files", "%u files", count);
    } else {
        static uint16_t selects[4096];
        const char *bad = 0;
        uint32_t bad_i = 0;
        for (uint32_t i = 0; i < count; i++) {
            uint8_t e[64];
            fw_read(e, 64);
            uint32_t fsize = be32(e);
            uint16_t sel = (uint16_t)(e[4] << 8 | e[5]);
            char *name = (char *)e + 8;
            int terminated = memchr_nul(name, 56);
            if (!terminated)
                name[55] = 0;
            print("fact fwcfg.file.%u %s (select 0x%x, %u bytes)\n", i, name, sel, fsize);
            selects[i] = sel;
            if (!bad && !terminated)
                bad = "name not NUL-terminated", bad_i = i;
            if (!bad && sel < FW_CFG_FILE_FIRST)
                bad = "select below 0x20", bad_i = i;
            if (!bad && !name[0])
                bad = "empty name", bad_i = i;
            for (uint32_t j = 0; !bad && j < i; j++)
                if (selects[j] == sel)
                    bad = "select used twice", bad_i = i;
        }
        check(!bad, "fwcfg-files", "entry %u: %s", bad_i, bad ? bad : "");
    }

    uint8_t unk[16];
    fw_select(FW_CFG_UNKNOWN);
    fw_read(unk, 16);
    check(all_zero(unk, 16), "fwcfg-unknown-key", "key 0x%x reads %02x %02x %02x %02x ..., want zeros", FW_CFG_UNKNOWN,
          unk[0], unk[1], unk[2], unk[3]);
}

/* ---- the multiboot info ---- */
static uint32_t mods_count;

static void check_multiboot(const struct mb_info *mbi)
{
    uint64_t k0 = (uint32_t)_image_start, k1 = (uint32_t)_end;
    uint32_t flags = mbi->flags;
    print("fact mb.info 0x%x\n", (uint32_t)mbi);
    print("fact mb.flags 0x%x\n", flags);
    print("fact mb.kernel 0x%lx-0x%lx\n", k0, k1);
    add_used("the multiboot info", (uint32_t)mbi, sizeof *mbi);
    check(!overlaps((uint32_t)mbi, (uint32_t)mbi + sizeof *mbi, k0, k1), "mbi-outside-kernel",
          "the multiboot info at 0x%x overlaps the kernel 0x%lx-0x%lx", (uint32_t)mbi, k0, k1);

    /* Header flag 1 asked for memory information: mem_* must be there (mmap_* may be). */
    if (check(flags & MBI_MEM, "mbi-mem", "flags 0x%x without bit 0 (mem_lower/mem_upper)", flags)) {
        print("fact mb.mem_lower %u\n", mbi->mem_lower);
        print("fact mb.mem_upper %u\n", mbi->mem_upper);
        check(mbi->mem_lower <= 640, "mem-lower", "mem_lower %u KiB > 640", mbi->mem_lower);
    }

    if (flags & (1u << 1))
        print("fact mb.boot_device 0x%x\n", mbi->boot_device);

    if (flags & MBI_CMDLINE) {
        uint32_t len = 0;
        int terminated = copy_str(mb_cmdline, mbi->cmdline, &len);
        check(terminated, "cmdline-terminated", "no NUL in the %u bytes at 0x%x", STR_MAX, mbi->cmdline);
        print("fact mb.cmdline %s\n", mb_cmdline);
        add_used("the command line", mbi->cmdline, len + 1);
        check(!overlaps(mbi->cmdline, (uint64_t)mbi->cmdline + len + 1, k0, k1), "cmdline-outside-kernel",
              "command line at 0x%x (%u bytes) overlaps the kernel", mbi->cmdline, len + 1);
        const char *p = mb_cmdline;
        while (*p == ' ')
            p++;
        while (*p && *p != ' ')
            p++;
        mb_args = p;
    } else {
        ok_note("cmdline-terminated", "no command line (flag 2 clear)");
    }

    if (flags & MBI_MMAP) {
        uint32_t addr = mbi->mmap_addr, len = mbi->mmap_length, off = 0, i = 0;
        const char *bad = 0;
        print("fact mb.mmap_addr 0x%x\n", addr);
        print("fact mb.mmap_length %u\n", len);
        add_used("the memory map", addr, len);
        check(!overlaps(addr, (uint64_t)addr + len, k0, k1), "mmap-outside-kernel",
              "memory map at 0x%x (%u bytes) overlaps the kernel", addr, len);
        while (off < len) {
            const struct mb_mmap *e = (const struct mb_mmap *)(addr + off);
            if (len - off < 4 || e->size < 20 || e->size > len - off - 4) {
                bad = len - off < 4 ? "a partial size field at the end" : e->size < 20 ? "size < 20" : "runs past mmap_length";
                break;
            }
            print("fact mb.mmap.%u 0x%lx 0x%lx %u\n", i, e->base, e->length, e->type);
            if (e->type == 1 && e->length && n_ram < MAX_RAM)
                ram[n_ram++] = (struct range){e->base, e->base + e->length, "RAM"};
            off += e->size + 4;
            i++;
        }
        if (!bad && i == 0)
            bad = "no entries";
        check(!bad, "mmap-entries", "entry %u at offset %u: %s (mmap_length %u)", i, off, bad ? bad : "", len);
        uint64_t upper_end = ram_run_end(0x100000);
        if (check(upper_end > 0x100000, "mmap-ram-at-1m", "no type-1 entry contains 0x100000")) {
            print("fact mb.mmap.upper_end 0x%lx\n", upper_end);
            if (flags & MBI_MEM)
                check((uint64_t)mbi->mem_upper * 1024 + 0x100000 == upper_end, "mem-upper",
                      "mem_upper %u KiB: 1 MiB + mem_upper = 0x%lx, but the RAM at 1 MiB ends at 0x%lx", mbi->mem_upper,
                      (uint64_t)mbi->mem_upper * 1024 + 0x100000, upper_end);
        }
    } else {
        ok_note("mmap-entries", "no memory map (flag 6 clear)");
        if (flags & MBI_MEM) {
            n_ram = 2;
            ram[0] = (struct range){0, (uint64_t)mbi->mem_lower * 1024, "mem_lower"};
            ram[1] = (struct range){0x100000, 0x100000 + (uint64_t)mbi->mem_upper * 1024, "mem_upper"};
        }
    }
    check(in_ram(k0, k1), "kernel-in-ram", "kernel 0x%lx-0x%lx is not inside type-1 RAM", k0, k1);

    if (flags & MBI_MODS) {
        mods_count = mbi->mods_count;
        print("fact mb.mods %u\n", mods_count);
        const struct mb_module *m = (const struct mb_module *)mbi->mods_addr;
        uint32_t n = mods_count > 64 ? 64 : mods_count;
        check(mods_count <= 64, "mods-count", "%u modules (this guest looks at 64)", mods_count);
        add_used("the module list", mbi->mods_addr, 16 * n);
        check(n == 0 || !overlaps(mbi->mods_addr, (uint64_t)mbi->mods_addr + 16 * n, k0, k1), "modlist-outside-kernel",
              "module list at 0x%x overlaps the kernel", mbi->mods_addr);
        const char *aligned = 0, *order = 0, *inram = 0, *disjoint = 0, *strings = 0;
        uint32_t ai = 0, oi = 0, ri = 0, di = 0, si = 0;
        for (uint32_t i = 0; i < n; i++) {
            static char str[STR_MAX];
            uint32_t len = 0, s0 = m[i].mod_start, s1 = m[i].mod_end;
            int terminated = m[i].string ? copy_str(str, m[i].string, &len) : (str[0] = 0, 1);
            uint32_t size = s1 >= s0 ? s1 - s0 : 0;
            print("fact mb.mod.%u.start 0x%x\n", i, s0);
            print("fact mb.mod.%u.size %u\n", i, size);
            print("fact mb.mod.%u.string %s\n", i, str);
            print("fact mb.mod.%u.fnv %08x\n", i, fnv1a((const volatile uint8_t *)s0, size, FNV_BASIS));
            if (m[i].string)
                add_used("a module string", m[i].string, len + 1);
            if (!strings && (!terminated || (m[i].string && overlaps(m[i].string, (uint64_t)m[i].string + len + 1, k0, k1))))
                strings = terminated ? "its string overlaps the kernel" : "its string has no NUL in 4096 bytes", si = i;
            if (!aligned && (s0 & 0xfff))
                aligned = "not page-aligned", ai = i;
            if (!order && s1 < s0)
                order = "mod_end < mod_start", oi = i;
            if (!inram && !in_ram(s0, s1))
                inram = "not inside type-1 RAM", ri = i;
            if (!disjoint && overlaps(s0, s1, k0, k1))
                disjoint = "overlaps the kernel", di = i;
            for (uint32_t j = 0; !disjoint && j < i; j++)
                if (overlaps(s0, s1, m[j].mod_start, m[j].mod_end))
                    disjoint = "overlaps an earlier module", di = i;
        }
        /* Boot structures inside a module (or a module over them) would be overwritten by one
         * or the other. */
        static char what[64];
        for (uint32_t i = 0; i < n && !disjoint; i++)
            for (int u = 0; u < n_used && !disjoint; u++)
                if (overlaps(m[i].mod_start, m[i].mod_end, used[u].start, used[u].end)) {
                    ksnprintf(what, sizeof what, "overlaps %s", used[u].what);
                    disjoint = what, di = i;
                }
        for (uint32_t i = 0; i < n; i++)
            add_used("a module", m[i].mod_start, m[i].mod_end > m[i].mod_start ? m[i].mod_end - m[i].mod_start : 0);
        check(!aligned, "mods-page-aligned", "module %u at 0x%x: %s", ai, n ? m[ai].mod_start : 0, aligned);
        check(!order, "mods-end", "module %u 0x%x-0x%x: %s", oi, n ? m[oi].mod_start : 0, n ? m[oi].mod_end : 0, order);
        check(!inram, "mods-in-ram", "module %u 0x%x-0x%x: %s", ri, n ? m[ri].mod_start : 0, n ? m[ri].mod_end : 0, inram);
        check(!disjoint, "mods-disjoint", "module %u 0x%x-0x%x: %s", di, n ? m[di].mod_start : 0, n ? m[di].mod_end : 0,
              disjoint);
        check(!strings, "mods-strings", "module %u: %s", si, strings);
    } else {
        print("fact mb.mods 0\n");
    }

    if (flags & MBI_LOADER) {
        static char name[STR_MAX];
        uint32_t len = 0;
        check(copy_str(name, mbi->boot_loader_name, &len), "loader-name", "no NUL in 4096 bytes at 0x%x",
              mbi->boot_loader_name);
        print("fact mb.loader %s\n", name);
        add_used("the boot loader name", mbi->boot_loader_name, len + 1);
    }
}

/* ---- SMP: INIT, SIPI, SIPI to all but self, the way kvm-unit-tests does it ---- */
static int icr_idle(void)
{
    uint64_t end = rdtsc() + 100 * tsc_per_ms;
    while (lapic_read(LAPIC_ICR_LO) & ICR_BUSY)
        if (rdtsc() > end)
            return 0;
    return 1;
}

static int send_ipi(uint32_t low)
{
    if (!icr_idle())
        return 0;
    lapic_write(LAPIC_ICR_HI, 0);
    lapic_write(LAPIC_ICR_LO, low);
    return icr_idle();
}

/* A free page below 1 MiB for the trampoline: in RAM, clear of every boot structure and module. */
static uint32_t pick_trampoline(uint32_t size)
{
    static const uint32_t first[] = {0x8000, 0x70000};
    for (int pass = 0; pass < 2; pass++) {
        uint32_t n = pass == 0 ? 2 : 0x9f;
        for (uint32_t i = pass == 0 ? 0 : 1; i < n; i++) {
            uint32_t page = pass == 0 ? first[i] : i << 12;
            int ok_page = in_ram(page, page + size);
            for (int u = 0; u < n_used && ok_page; u++)
                if (overlaps(page, page + size, used[u].start, used[u].end))
                    ok_page = 0;
            if (ok_page)
                return page;
        }
    }
    return 0;
}

static void check_smp(uint32_t ncpus)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    check((base & 0xfffff000u) == LAPIC_BASE && (base & APIC_BASE_BSP) && !(base & APIC_BASE_X2APIC), "apic-base",
          "IA32_APIC_BASE 0x%lx: want base 0xfee00000, BSP, xAPIC mode", base);
    if (!(base & APIC_BASE_ENABLE))
        wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE);
    lapic_write(LAPIC_SVR, lapic_read(LAPIC_SVR) | 0x1ff); /* software enable, spurious vector 0xff */
    uint32_t bsp = lapic_read(LAPIC_ID) >> 24;
    print("fact smp.bsp %u\n", bsp);

    uint32_t size = (uint32_t)(tramp_end - tramp_start);
    uint32_t page = pick_trampoline(size);
    if (!check(page != 0, "smp-trampoline", "no free RAM page below 0x9f000 for %u bytes", size))
        return;
    print("fact smp.trampoline 0x%x\n", page);
    memcpy((void *)page, tramp_start, size);

    int sent = 1;
    if (ncpus > 1) {
        sent &= send_ipi(ICR_ALL_BUT_SELF | ICR_LEVEL | ICR_ASSERT | ICR_INIT);
        udelay(10000);
        sent &= send_ipi(ICR_ALL_BUT_SELF | ICR_STARTUP | (page >> 12));
        udelay(200);
        sent &= send_ipi(ICR_ALL_BUT_SELF | ICR_STARTUP | (page >> 12));
        check(sent, "smp-ipi", "the ICR stayed busy (delivery status) for more than 100 ms");
        /* At most 3 s for all of them, then 20 ms in which no more may arrive. */
        uint64_t t0 = rdtsc(), end = t0 + 3000 * tsc_per_ms;
        while (ap_checked_in < ncpus - 1 && rdtsc() < end)
            pause();
        uint64_t t1 = rdtsc();
        udelay(20000);
        print("fact smp.wait_us %lu\n", (t1 - t0) * 1000 / tsc_per_ms);
    }
    uint32_t in = ap_checked_in, arrived = ap_arrivals;
    print("fact smp.started %u\n", in);
    check(in == ncpus - 1 && arrived == ncpus - 1, "smp-started", "%u APs checked in (%u arrived), want %u", in,
          arrived, ncpus - 1);

    /* The APIC IDs they reported: distinct, none the BSP's. */
    uint32_t n = in < MAX_APS ? in : MAX_APS, ids[MAX_APS];
    for (uint32_t i = 0; i < n; i++)
        ids[i] = ap_ids[i];
    for (uint32_t i = 1; i < n; i++)
        for (uint32_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            uint32_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    const char *bad = 0;
    uint32_t bad_id = 0;
    console_lock();
    put_bytes("fact smp.ap_ids ", 16);
    for (uint32_t i = 0; i < n; i++) {
        char num[16];
        int l = ksnprintf(num, sizeof num, i ? ",%u" : "%u", ids[i]);
        put_bytes(num, (uint64_t)l);
        if (!bad && ids[i] == bsp)
            bad = "the BSP's", bad_id = ids[i];
        if (!bad && i && ids[i] == ids[i - 1])
            bad = "reported twice:", bad_id = ids[i];
    }
    serial_putc('\n');
    console_unlock();
    check(!bad, "smp-ap-ids", "APIC ID %s %u", bad ? bad : "", bad_id);
}

/* ---- main ---- */
void mboot_main(uint32_t magic, uint32_t mbi_pa);
void mboot_main(uint32_t magic, uint32_t mbi_pa)
{
    print("mboot: entered via multiboot\n");
    if (!check_eq("entry-magic", magic, MB_BOOT_MAGIC)) {
        summary();
        exit_with(EXIT_FAILURE_CODE);
    }
    check((entry_cr0 & 0x80000001u) == 1, "entry-cr0", "CR0 0x%x: want PE set, PG clear", entry_cr0);
    check(!(entry_eflags & ((1u << 17) | (1u << 9))), "entry-eflags", "EFLAGS 0x%x: want VM and IF clear", entry_eflags);
    check(!bss_dirty_at, "bss-zero", "byte 0x%x at 0x%x", bss_dirty_value, bss_dirty_at - 1);

    check_multiboot((const struct mb_info *)mbi_pa);
    check_fw_cfg();

    uint64_t total = 0;
    for (int i = 0; i < n_ram; i++)
        total += ram[i].end - ram[i].start;
    check(total <= fw_ram, "fwcfg-ram-covers-mmap", "type-1 RAM adds up to %lu bytes, fw_cfg says %lu", total, fw_ram);

    /* The expectations given on the command line. */
    uint64_t v;
    size_t vl;
    const char *s;
    if (opt_u64("expect.cpus=", &v))
        check(fw_cpus == v, "expect-cpus", "fw_cfg says %lu CPUs, want %lu", fw_cpus, v);
    if (opt_u64("expect.ram=", &v))
        check(fw_ram == v, "expect-ram", "fw_cfg says %lu bytes, want %lu", fw_ram, v);
    if (opt_u64("expect.mods=", &v))
        check(mods_count == v, "expect-mods", "%u modules, want %lu", mods_count, v);
    /* fw_cfg's command line next to the multiboot one: is it the part after the kernel path? */
    const char *args = mb_args[0] == ' ' ? mb_args + 1 : mb_args;
    int matches_mbi = fw_cmdline_ok && streq(fw_cmdline, args);
    print("fact fwcfg.cmdline_is_mbi_args %s\n", matches_mbi ? "yes" : "no");
    if ((s = opt("expect.cmdline=", &vl)) != 0) {
        static char want[STR_MAX];
        memcpy(want, s, vl);
        want[vl] = 0;
        if (streq(want, "mbi"))
            check(matches_mbi, "expect-cmdline", "fw_cfg command line \"%s\", want the multiboot one after the kernel path \"%s\"",
                  fw_cmdline, args);
        else if (streq(want, "none"))
            check(fw_cmdline_ok && !fw_cmdline[0], "expect-cmdline", "fw_cfg command line \"%s\", want none", fw_cmdline);
        else
            check(fw_cmdline_ok && has_word(fw_cmdline, want), "expect-cmdline",
                  "fw_cfg command line \"%s\" does not have the word \"%s\"", fw_cmdline, want);
    }
    uint64_t exit_code = 0;
    if (opt_u64("mb.exit=", &v))
        exit_code = v;
    if ((s = opt("mb.fault=", &vl)) != 0) {
        /* Tests of the exception path: the handler prints FAIL exception and exits with 0x55. */
        if (vl == 2 && memcmp(s, "ud", 2) == 0)
            __asm__ volatile("ud2");
        if (vl == 2 && memcmp(s, "gp", 2) == 0)
            __asm__ volatile("mov %0, %%ds" ::"r"(0x18u)); /* beyond the GDT limit: #GP(0x18) */
        fail("cmdline", "mb.fault= wants ud or gp");
    }

    tsc_calibrate();
    print("fact tsc_khz %lu\n", tsc_per_ms);
    print("fact tsc_source %s\n", tsc_source);
    check_smp((uint32_t)fw_cpus);

    summary();
    exit_with(n_fail ? EXIT_FAILURE_CODE : (uint32_t)exit_code);
}
