/*
 * Swiftlet virtio guest: a driver written from VIRTIO 1.2 (§2 basic facilities, §2.7 split
 * virtqueues, §3.1 initialization, §4.2 virtio over MMIO, §5.1 network, §5.2 block, §5.3 console,
 * §5.4 entropy, §5.10 socket) that finds its devices through Linux's
 * `virtio_mmio.device=<size>@<base>:<irq>` words on its command line and checks each one. It polls
 * the used rings (no interrupt handler) and reads the interrupt status register instead.
 *
 * The network check sends an Ethernet frame of type 0x88B5 and waits for the host's answer (the
 * test's helper echoes such frames, Guests/tools/virtio-host.py). The console check writes a line
 * and reports what input arrives. The vsock check answers the host's connection to port 52 and
 * connects to host port 5000, where the helper echoes.
 *
 * Block devices are expected to hold the test image convention: every byte of sector n is
 * (n ^ 0xA5) & 0xFF. Report lines as every project guest's (common/lib.h); exit through port 0x500
 * with status 0 if every check passed, 1 otherwise.
 */
#include "lib.h"

#define REG(base, off) (*(volatile uint32_t *)(uintptr_t)((base) + (off)))
#define MAGIC 0x000
#define VERSION 0x004
#define DEVICE_ID 0x008
#define DEVICE_FEATURES 0x010
#define DEVICE_FEATURES_SEL 0x014
#define DRIVER_FEATURES 0x020
#define DRIVER_FEATURES_SEL 0x024
#define QUEUE_SEL 0x030
#define QUEUE_NUM_MAX 0x034
#define QUEUE_NUM 0x038
#define QUEUE_READY 0x044
#define QUEUE_NOTIFY 0x050
#define INTERRUPT_STATUS 0x060
#define INTERRUPT_ACK 0x064
#define STATUS 0x070
#define QUEUE_DESC 0x080
#define QUEUE_DRIVER 0x090
#define QUEUE_DEVICE 0x0A0
#define CONFIG 0x100

#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 64

#define F_VERSION_1_HIGH 1 /* bit 32 */
#define BLK_F_RO (1u << 5)

#define D_NEXT 1
#define D_WRITE 2

#define QSIZE 8

struct desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct avail { uint16_t flags; uint16_t idx; uint16_t ring[QSIZE]; uint16_t used_event; };
struct used_elem { uint32_t id; uint32_t len; };
struct used { uint16_t flags; uint16_t idx; struct used_elem ring[QSIZE]; uint16_t avail_event; };

static struct desc ring_desc[QSIZE] __attribute__((aligned(16)));
static struct avail ring_avail __attribute__((aligned(2)));
static struct used ring_used __attribute__((aligned(4)));
static uint8_t buffer[4096] __attribute__((aligned(16)));
static uint8_t header[16] __attribute__((aligned(16)));
static volatile uint8_t status_byte;

static void barrier(void) { __asm__ volatile("lock; addl $0, 0(%%esp)" ::: "memory"); }

/* memparse: a number (decimal or 0x hex) with an optional K, M or G. */
static const char *parse_number(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        p += 2;
        for (;; p++) {
            uint32_t d;
            if (*p >= '0' && *p <= '9') d = *p - '0';
            else if (*p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
            else if (*p >= 'A' && *p <= 'F') d = *p - 'A' + 10;
            else break;
            v = v * 16 + d;
        }
    } else {
        for (; *p >= '0' && *p <= '9'; p++) v = v * 10 + (uint32_t)(*p - '0');
    }
    if (*p == 'K' || *p == 'k') { v <<= 10; p++; }
    else if (*p == 'M' || *p == 'm') { v <<= 20; p++; }
    else if (*p == 'G' || *p == 'g') { v <<= 30; p++; }
    *out = v;
    return p;
}

/* §3.1.1 steps 1-6 with `low` as the device-specific feature bits; 1 if FEATURES_OK stuck. */
static int negotiate(uint32_t base, uint32_t low, int version1)
{
    REG(base, STATUS) = 0;
    REG(base, STATUS) = S_ACKNOWLEDGE;
    REG(base, STATUS) = S_ACKNOWLEDGE | S_DRIVER;
    REG(base, DRIVER_FEATURES_SEL) = 0;
    REG(base, DRIVER_FEATURES) = low;
    REG(base, DRIVER_FEATURES_SEL) = 1;
    REG(base, DRIVER_FEATURES) = version1 ? F_VERSION_1_HIGH : 0;
    REG(base, STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK;
    return (REG(base, STATUS) & S_FEATURES_OK) != 0;
}

/* Queue 0 with QSIZE entries on the static rings, then DRIVER_OK (§3.1.1 steps 7-8, §4.2.3.2). */
static int start_queue(uint32_t base)
{
    memset(ring_desc, 0, sizeof ring_desc);
    memset(&ring_avail, 0, sizeof ring_avail);
    memset((void *)&ring_used, 0, sizeof ring_used);
    REG(base, QUEUE_SEL) = 0;
    if (REG(base, QUEUE_READY) != 0 || REG(base, QUEUE_NUM_MAX) < QSIZE) return 0;
    REG(base, QUEUE_NUM) = QSIZE;
    REG(base, QUEUE_DESC) = (uint32_t)(uintptr_t)ring_desc;
    REG(base, QUEUE_DESC + 4) = 0;
    REG(base, QUEUE_DRIVER) = (uint32_t)(uintptr_t)&ring_avail;
    REG(base, QUEUE_DRIVER + 4) = 0;
    REG(base, QUEUE_DEVICE) = (uint32_t)(uintptr_t)&ring_used;
    REG(base, QUEUE_DEVICE + 4) = 0;
    REG(base, QUEUE_READY) = 1;
    REG(base, STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
    return REG(base, QUEUE_READY) == 1 && (REG(base, STATUS) & S_DRIVER_OK);
}

/* Makes descriptor 0's chain available, notifies, and polls the used ring; the used length, or
 * -1 if the device did not answer. */
static int submit(uint32_t base)
{
    uint16_t before = ((volatile struct used *)&ring_used)->idx;
    ring_avail.ring[ring_avail.idx % QSIZE] = 0;
    barrier();
    ring_avail.idx++;
    barrier();
    REG(base, QUEUE_NOTIFY) = 0;
    for (uint32_t spin = 0; spin < 20000000u; spin++) {
        barrier();
        if (((volatile struct used *)&ring_used)->idx != before) {
            barrier();
            return (int)ring_used.ring[before % QSIZE].len;
        }
    }
    return -1;
}

static void set_desc(int i, const void *addr, uint32_t len, uint16_t flags, uint16_t next)
{
    ring_desc[i].addr = (uint32_t)(uintptr_t)addr;
    ring_desc[i].len = len;
    ring_desc[i].flags = flags;
    ring_desc[i].next = next;
}

/* One block request: header, then `len` bytes of buffer (device-writable if `in`), then status. */
static int blk_request(uint32_t base, uint32_t type, uint32_t sector, uint32_t len, int in, int *used)
{
    memset(header, 0, sizeof header);
    header[0] = (uint8_t)type;
    header[8] = (uint8_t)sector;
    header[9] = (uint8_t)(sector >> 8);
    header[10] = (uint8_t)(sector >> 16);
    header[11] = (uint8_t)(sector >> 24);
    status_byte = 0xFF;
    if (len) {
        set_desc(0, header, 16, D_NEXT, 1);
        set_desc(1, buffer, len, (uint16_t)(D_NEXT | (in ? D_WRITE : 0)), 2);
        set_desc(2, (const void *)&status_byte, 1, D_WRITE, 0);
    } else {
        set_desc(0, header, 16, D_NEXT, 1);
        set_desc(1, (const void *)&status_byte, 1, D_WRITE, 0);
    }
    *used = submit(base);
    return status_byte;
}

static int sector_holds(uint32_t sector)
{
    for (int i = 0; i < 512; i++)
        if (buffer[i] != (uint8_t)((sector ^ 0xA5) & 0xFF)) return 0;
    return 1;
}

static void check_block(uint32_t base, int index)
{
    char name[48];
    uint32_t offered = 0;
    REG(base, DEVICE_FEATURES_SEL) = 0;
    offered = REG(base, DEVICE_FEATURES);
    int ro = (offered & BLK_F_RO) != 0;
    uint32_t want = offered & BLK_F_RO;
    ksnprintf(name, sizeof name, "blk%d-features-ok", index);
    if (!check(negotiate(base, want, 1), name, "FEATURES_OK did not stick with VERSION_1 and RO")) return;
    ksnprintf(name, sizeof name, "blk%d-queue", index);
    if (!check(start_queue(base), name, "queue 0 did not start (max %u)", REG(base, QUEUE_NUM_MAX))) return;
    uint32_t capacity = REG(base, CONFIG);
    uint32_t capacity_high = REG(base, CONFIG + 4);
    print("fact blk%d-capacity-sectors %u\n", index, capacity);
    print("fact blk%d-read-only %u\n", index, ro);
    ksnprintf(name, sizeof name, "blk%d-capacity", index);
    check(capacity >= 2 && capacity_high == 0, name, "capacity %u:%u sectors", capacity_high, capacity);

    int used;
    int st = blk_request(base, 0, 0, 512, 1, &used);
    ksnprintf(name, sizeof name, "blk%d-read-first", index);
    check(st == 0 && used == 513 && sector_holds(0), name, "status %d used %d byte 0x%x", st, used, buffer[0]);
    st = blk_request(base, 0, capacity - 1, 512, 1, &used);
    ksnprintf(name, sizeof name, "blk%d-read-last", index);
    check(st == 0 && sector_holds(capacity - 1), name, "status %d byte 0x%x", st, buffer[0]);
    st = blk_request(base, 0, capacity, 512, 1, &used);
    ksnprintf(name, sizeof name, "blk%d-past-the-end", index);
    check(st == 1, name, "status %d (want IOERR 1)", st);

    memset(buffer, 0, 20);
    st = blk_request(base, 8, 0, 20, 1, &used);
    ksnprintf(name, sizeof name, "blk%d-get-id", index);
    if (check(st == 0 && buffer[0] != 0, name, "status %d", st)) {
        char id[21];
        memcpy(id, buffer, 20);
        id[20] = 0;
        print("fact blk%d-id %s\n", index, id);
    }

    memset(buffer, 0x3C, 512);
    st = blk_request(base, 1, 1, 512, 0, &used);
    ksnprintf(name, sizeof name, "blk%d-write", index);
    if (ro) {
        check(st == 1, name, "status %d on a read-only drive (want IOERR 1)", st);
    } else {
        check(st == 0 && used == 1, name, "status %d used %d", st, used);
        st = blk_request(base, 4, 0, 0, 0, &used);
        ksnprintf(name, sizeof name, "blk%d-flush", index);
        check(st == 0, name, "status %d", st);
        memset(buffer, 0, 512);
        st = blk_request(base, 0, 1, 512, 1, &used);
        ksnprintf(name, sizeof name, "blk%d-read-back", index);
        check(st == 0 && buffer[0] == 0x3C && buffer[511] == 0x3C, name, "status %d byte 0x%x", st, buffer[0]);
        /* Put sector 1 back as the convention has it, for a second run on the same image. */
        memset(buffer, (1 ^ 0xA5) & 0xFF, 512);
        blk_request(base, 1, 1, 512, 0, &used);
    }
    uint32_t isr = REG(base, INTERRUPT_STATUS);
    ksnprintf(name, sizeof name, "blk%d-interrupt-status", index);
    check(isr & 1, name, "InterruptStatus 0x%x after used buffers", isr);
    REG(base, INTERRUPT_ACK) = isr;
    ksnprintf(name, sizeof name, "blk%d-interrupt-ack", index);
    check(REG(base, INTERRUPT_STATUS) == 0, name, "InterruptStatus 0x%x after ACK", REG(base, INTERRUPT_STATUS));

    /* A buffer outside RAM: the device must ask for a reset, and work again after one. */
    set_desc(0, header, 16, D_NEXT, 1);
    ring_desc[1].addr = 0xE0000000u;
    ring_desc[1].len = 512;
    ring_desc[1].flags = D_WRITE | D_NEXT;
    ring_desc[1].next = 2;
    set_desc(2, (const void *)&status_byte, 1, D_WRITE, 0);
    header[0] = 0;
    ring_avail.ring[ring_avail.idx % QSIZE] = 0;
    barrier();
    ring_avail.idx++;
    barrier();
    REG(base, QUEUE_NOTIFY) = 0;
    spin(1000000);
    /* §2.1.2: a device SHOULD set DEVICE_NEEDS_RESET in such an error state (Swiftlet does). */
    print("fact blk%d-needs-reset-after-bad-buffer %d\n", index, (REG(base, STATUS) & S_NEEDS_RESET) != 0);
    ksnprintf(name, sizeof name, "blk%d-reset-and-again", index);
    REG(base, STATUS) = 0;
    int again = REG(base, STATUS) == 0 && negotiate(base, want, 1) && start_queue(base);
    st = again ? blk_request(base, 0, 0, 512, 1, &used) : -1;
    check(again && st == 0 && sector_holds(0), name, "re-initialised %d, status %d", again, st);
}

static void check_entropy(uint32_t base)
{
    if (!check(negotiate(base, 0, 1), "rng-features-ok", "FEATURES_OK did not stick")) return;
    if (!check(start_queue(base), "rng-queue", "queue 0 did not start")) return;
    memset(buffer, 0, 64);
    set_desc(0, buffer, 16, D_WRITE | D_NEXT, 1);
    set_desc(1, buffer + 32, 16, D_WRITE, 0);
    int used = submit(base);
    int nonzero = 0;
    for (int i = 0; i < 16; i++) nonzero += buffer[i] != 0;
    for (int i = 32; i < 48; i++) nonzero += buffer[i] != 0;
    check(used > 0 && used <= 32 && nonzero >= 8, "rng-bytes", "used %d, %d non-zero bytes of 32", used, nonzero);
    uint32_t isr = REG(base, INTERRUPT_STATUS);
    check(isr & 1, "rng-interrupt-status", "InterruptStatus 0x%x", isr);
    REG(base, INTERRUPT_ACK) = isr;
}

/* Rings for the devices with several queues: queue q on rings[q]. */
struct ring {   /* §2.7: the descriptor table 16-aligned, so the struct's size is a multiple of 16 too */
    struct desc desc[QSIZE] __attribute__((aligned(16)));
    struct avail avail;
    struct used used __attribute__((aligned(4)));
    uint16_t seen;
};
static struct ring rings[3] __attribute__((aligned(16)));

static int ring_setup(uint32_t base, uint32_t q)
{
    struct ring *r = &rings[q];
    memset(r, 0, sizeof *r);
    REG(base, QUEUE_SEL) = q;
    if (REG(base, QUEUE_READY) != 0 || REG(base, QUEUE_NUM_MAX) < QSIZE) return 0;
    REG(base, QUEUE_NUM) = QSIZE;
    REG(base, QUEUE_DESC) = (uint32_t)(uintptr_t)r->desc;
    REG(base, QUEUE_DESC + 4) = 0;
    REG(base, QUEUE_DRIVER) = (uint32_t)(uintptr_t)&r->avail;
    REG(base, QUEUE_DRIVER + 4) = 0;
    REG(base, QUEUE_DEVICE) = (uint32_t)(uintptr_t)&r->used;
    REG(base, QUEUE_DEVICE + 4) = 0;
    REG(base, QUEUE_READY) = 1;
    return REG(base, QUEUE_READY) == 1;
}

/* Queues 0..n-1 and DRIVER_OK. */
static int rings_start(uint32_t base, uint32_t n)
{
    for (uint32_t q = 0; q < n; q++)
        if (!ring_setup(base, q)) return 0;
    REG(base, STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
    return (REG(base, STATUS) & S_DRIVER_OK) != 0;
}

/* Descriptor `i` of queue q holds one buffer; it is made available and the queue notified. */
static void ring_give(uint32_t base, uint32_t q, int i, const void *addr, uint32_t len, uint16_t flags)
{
    struct ring *r = &rings[q];
    r->desc[i].addr = (uint32_t)(uintptr_t)addr;
    r->desc[i].len = len;
    r->desc[i].flags = flags;
    r->desc[i].next = 0;
    r->avail.ring[r->avail.idx % QSIZE] = (uint16_t)i;
    barrier();
    r->avail.idx++;
    barrier();
    REG(base, QUEUE_NOTIFY) = q;
}

/* The next used entry of queue q: its length (and head in *id), or -1 after `spins` polls. */
static int ring_wait(uint32_t q, uint32_t spins, uint32_t *id)
{
    struct ring *r = &rings[q];
    for (uint32_t n = 0; n < spins; n++) {
        barrier();
        if (((volatile struct used *)&r->used)->idx != r->seen) {
            barrier();
            struct used_elem e = r->used.ring[r->seen % QSIZE];
            r->seen++;
            if (id) *id = e.id;
            return (int)e.len;
        }
    }
    return -1;
}

static uint32_t device_features_low(uint32_t base)
{
    REG(base, DEVICE_FEATURES_SEL) = 0;
    return REG(base, DEVICE_FEATURES);
}

static void check_interrupt(uint32_t base, const char *name)
{
    uint32_t isr = REG(base, INTERRUPT_STATUS);
    check(isr & 1, name, "InterruptStatus 0x%x after used buffers", isr);
    REG(base, INTERRUPT_ACK) = isr;
}

#define WAIT_SPINS 40000000u

static uint8_t io_in[2][2048] __attribute__((aligned(16)));
static uint8_t io_out[512] __attribute__((aligned(16)));

/* §5.3: one port; a line out on transmitq0, whatever input arrives on receiveq0. */
static void check_console(uint32_t base)
{
    if (!check(negotiate(base, 0, 1), "console-features-ok", "FEATURES_OK did not stick")) return;
    if (!check(rings_start(base, 2), "console-queues", "receiveq0 and transmitq0 did not start")) return;
    memset(io_in[0], 0, 64);
    ring_give(base, 0, 0, io_in[0], 63, D_WRITE);
    static const char line[] = "virtio-console: hello from the guest\n";
    memcpy(io_out, line, sizeof line - 1);
    ring_give(base, 1, 0, io_out, sizeof line - 1, 0);
    int used = ring_wait(1, WAIT_SPINS, 0);
    check(used >= 0, "console-transmit", "the device did not return the transmit buffer");
    int got = ring_wait(0, WAIT_SPINS, 0);
    if (got > 0) {
        io_in[0][got] = 0;
        for (int i = 0; i < got; i++) if (io_in[0][i] < 0x20) io_in[0][i] = '.';
        print("fact console-input %s\n", (const char *)io_in[0]);
    } else {
        print("fact console-input (none)\n");
    }
    check_interrupt(base, "console-interrupt-status");
}

#define NET_F_MAC (1u << 5)
#define NET_HDR 12
#define ETHERTYPE_TEST 0x88B5

/* §5.1: a frame out through transmitq1, the host's echo in through receiveq1. */
static void check_net(uint32_t base)
{
    uint32_t want = device_features_low(base) & NET_F_MAC;
    if (!check(negotiate(base, want, 1), "net-features-ok", "FEATURES_OK did not stick")) return;
    if (!check(rings_start(base, 2), "net-queues", "receiveq1 and transmitq1 did not start")) return;
    uint8_t mac[6] = { 0x02, 0, 0, 0, 0, 0x99 };
    if (want)
        for (int i = 0; i < 6; i++) mac[i] = *(volatile uint8_t *)(uintptr_t)(base + CONFIG + i);
    print("fact net-mac %x:%x:%x:%x:%x:%x\n", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    ring_give(base, 0, 0, io_in[0], sizeof io_in[0], D_WRITE);
    ring_give(base, 0, 1, io_in[1], sizeof io_in[1], D_WRITE);
    static const char payload[] = "swiftlet virtio-net guest";
    memset(io_out, 0, NET_HDR);
    memset(io_out + NET_HDR, 0xFF, 6);
    memcpy(io_out + NET_HDR + 6, mac, 6);
    io_out[NET_HDR + 12] = ETHERTYPE_TEST >> 8;
    io_out[NET_HDR + 13] = ETHERTYPE_TEST & 0xFF;
    memcpy(io_out + NET_HDR + 14, payload, sizeof payload - 1);
    uint32_t length = NET_HDR + 14 + sizeof payload - 1;
    ring_give(base, 1, 0, io_out, length, 0);
    check(ring_wait(1, WAIT_SPINS, 0) >= 0, "net-transmit", "the device did not return the transmit buffer");
    /* The answer: the first frame of our type (others, if any, are skipped). */
    for (int tries = 0; tries < 4; tries++) {
        uint32_t id;
        int got = ring_wait(0, WAIT_SPINS, &id);
        if (got < 0) break;
        uint8_t *frame = io_in[id & 1];
        if (got < NET_HDR + 14 || ((frame[NET_HDR + 12] << 8) | frame[NET_HDR + 13]) != ETHERTYPE_TEST) {
            ring_give(base, 0, (int)(id & 1), frame, sizeof io_in[0], D_WRITE);
            continue;
        }
        print("fact net-num-buffers %u\n", frame[10] | (frame[11] << 8));
        int n = got - NET_HDR - 14;
        if (n > 100) n = 100;
        char text[101];
        memcpy(text, frame + NET_HDR + 14, (size_t)n);
        text[n] = 0;
        print("fact net-received %s\n", text);
        check(memcmp(frame, "\xff\xff\xff\xff\xff\xff", 6) == 0 || memcmp(frame + NET_HDR, mac, 6) == 0,
              "net-receive-address", "the answer is for neither us nor everyone");
        check_interrupt(base, "net-interrupt-status");
        return;
    }
    check(0, "net-receive", "no frame of type 0x88b5 came back");
}

/* §5.10: struct virtio_vsock_hdr. */
struct vsock_hdr {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));
#define VSOCK_OP_REQUEST 1
#define VSOCK_OP_RESPONSE 2
#define VSOCK_OP_RST 3
#define VSOCK_OP_SHUTDOWN 4
#define VSOCK_OP_RW 5
#define VSOCK_OP_CREDIT_UPDATE 6

static uint64_t vsock_cid;
static uint32_t vsock_forwarded;

static void vsock_send(uint32_t base, uint32_t src_port, uint32_t dst_port, uint16_t op, uint32_t flags,
                       const char *data, uint32_t len)
{
    struct vsock_hdr *h = (struct vsock_hdr *)io_out;
    memset(h, 0, sizeof *h);
    h->src_cid = vsock_cid;
    h->dst_cid = 2;
    h->src_port = src_port;
    h->dst_port = dst_port;
    h->len = len;
    h->type = 1;
    h->op = op;
    h->flags = flags;
    h->buf_alloc = sizeof io_in[0] - sizeof *h;
    h->fwd_cnt = vsock_forwarded;
    memcpy(io_out + sizeof *h, data, len);
    ring_give(base, 1, 0, io_out, (uint32_t)sizeof *h + len, 0);
    ring_wait(1, WAIT_SPINS, 0);
}

/* The next packet from the host, skipping credit updates; its header in *h, payload in `text`. */
static int vsock_next(uint32_t base, struct vsock_hdr *h, char *text, int cap)
{
    for (int tries = 0; tries < 8; tries++) {
        uint32_t id;
        int got = ring_wait(0, WAIT_SPINS, &id);
        if (got < (int)sizeof *h) return 0;
        uint8_t *buffer = io_in[id & 1];
        memcpy(h, buffer, sizeof *h);
        int n = got - (int)sizeof *h;
        if (n > cap - 1) n = cap - 1;
        memcpy(text, buffer + sizeof *h, (size_t)(n > 0 ? n : 0));
        text[n > 0 ? n : 0] = 0;
        if (h->op == VSOCK_OP_RW) vsock_forwarded += h->len;
        ring_give(base, 0, (int)(id & 1), buffer, sizeof io_in[0], D_WRITE);
        if (h->op != VSOCK_OP_CREDIT_UPDATE) return 1;
    }
    return 0;
}

static void check_vsock(uint32_t base)
{
    uint32_t want = device_features_low(base) & 1;   /* VIRTIO_VSOCK_F_STREAM */
    if (!check(negotiate(base, want, 1), "vsock-features-ok", "FEATURES_OK did not stick")) return;
    if (!check(rings_start(base, 3), "vsock-queues", "rx, tx and event did not start")) return;
    vsock_cid = REG(base, CONFIG) | (uint64_t)REG(base, CONFIG + 4) << 32;
    print("fact vsock-cid %u\n", (uint32_t)vsock_cid);
    ring_give(base, 0, 0, io_in[0], sizeof io_in[0], D_WRITE);
    ring_give(base, 0, 1, io_in[1], sizeof io_in[1], D_WRITE);
    struct vsock_hdr h;
    char text[128];

    /* The host connects to port 52 (CONNECT 52): accept, read its line, answer. */
    if (check(vsock_next(base, &h, text, sizeof text) && h.op == VSOCK_OP_REQUEST && h.dst_port == 52 && h.src_cid == 2,
              "vsock-host-request", "op %u to port %u", h.op, h.dst_port)) {
        uint32_t host_port = h.src_port;
        vsock_send(base, 52, host_port, VSOCK_OP_RESPONSE, 0, 0, 0);
        if (check(vsock_next(base, &h, text, sizeof text) && h.op == VSOCK_OP_RW, "vsock-host-data", "op %u", h.op))
            print("fact vsock-from-host %s\n", text);
        vsock_send(base, 52, host_port, VSOCK_OP_RW, 0, "pong from the guest", 19);
        vsock_send(base, 52, host_port, VSOCK_OP_SHUTDOWN, 3, 0, 0);
        check(vsock_next(base, &h, text, sizeof text) && h.op == VSOCK_OP_RST, "vsock-host-close", "op %u", h.op);
    }

    /* The guest connects to host port 5000, where the helper echoes. */
    vsock_forwarded = 0;
    vsock_send(base, 1234, 5000, VSOCK_OP_REQUEST, 0, 0, 0);
    if (!check(vsock_next(base, &h, text, sizeof text) && h.op == VSOCK_OP_RESPONSE && h.src_port == 5000,
               "vsock-connect", "op %u from port %u", h.op, h.src_port)) return;
    vsock_send(base, 1234, 5000, VSOCK_OP_RW, 0, "hello vsock", 11);
    if (check(vsock_next(base, &h, text, sizeof text) && h.op == VSOCK_OP_RW, "vsock-echo", "op %u", h.op))
        print("fact vsock-echo %s\n", text);
    vsock_send(base, 1234, 5000, VSOCK_OP_SHUTDOWN, 3, 0, 0);
    check(vsock_next(base, &h, text, sizeof text) && h.op == VSOCK_OP_RST, "vsock-close", "op %u", h.op);
    check_interrupt(base, "vsock-interrupt-status");
}

/*
 * Benchmarks (`virtio.bench` on the command line; Guests/tools/virtio-bench.py times them from the
 * host, by when each line arrives): instead of the checks, on the first block device N 4 KiB reads
 * one at a time (round trips) and M sequential 64 KiB reads; on the network device F 64-byte frames
 * with up to QSIZE in flight.
 */
#define BENCH_4K 4000
#define BENCH_64K 1000
#define BENCH_FRAMES 20000
static uint8_t big[65536] __attribute__((aligned(4096)));

static void bench_block(uint32_t base)
{
    if (!negotiate(base, 0, 1) || !start_queue(base)) { print("bench blk-error\n"); return; }
    uint32_t capacity = REG(base, CONFIG);
    if (capacity < 256) { print("bench blk-error: %u sectors\n", capacity); return; }
    int used;
    print("bench blk-4k-read start\n");
    for (uint32_t i = 0; i < BENCH_4K; i++) {
        memset(header, 0, sizeof header);
        uint32_t sector = (i * 8) % (capacity - 8);
        header[8] = (uint8_t)sector; header[9] = (uint8_t)(sector >> 8); header[10] = (uint8_t)(sector >> 16);
        set_desc(0, header, 16, D_NEXT, 1);
        set_desc(1, buffer, 4096, D_NEXT | D_WRITE, 2);
        set_desc(2, (const void *)&status_byte, 1, D_WRITE, 0);
        used = submit(base);
        if (used != 4097 || status_byte != 0) { print("bench blk-error at %u: %d\n", i, used); return; }
    }
    print("bench blk-4k-read done %u\n", BENCH_4K);
    print("bench blk-64k-read start\n");
    for (uint32_t i = 0; i < BENCH_64K; i++) {
        memset(header, 0, sizeof header);
        uint32_t sector = (i * 128) % (capacity - 128);
        header[8] = (uint8_t)sector; header[9] = (uint8_t)(sector >> 8); header[10] = (uint8_t)(sector >> 16);
        set_desc(0, header, 16, D_NEXT, 1);
        set_desc(1, big, sizeof big, D_NEXT | D_WRITE, 2);
        set_desc(2, (const void *)&status_byte, 1, D_WRITE, 0);
        used = submit(base);
        if (used != (int)sizeof big + 1 || status_byte != 0) { print("bench blk-error at %u: %d\n", i, used); return; }
    }
    print("bench blk-64k-read done %u\n", BENCH_64K);
}

static void bench_net(uint32_t base)
{
    if (!negotiate(base, 0, 1) || !rings_start(base, 2)) { print("bench net-error\n"); return; }
    memset(io_out, 0, NET_HDR + 64);
    memset(io_out + NET_HDR, 0xFF, 6);
    io_out[NET_HDR + 6] = 0x02;
    io_out[NET_HDR + 12] = 0x88; io_out[NET_HDR + 13] = 0xB6;   /* not the echoed type: one way only */
    struct ring *r = &rings[1];
    for (int i = 0; i < QSIZE; i++) {
        r->desc[i].addr = (uint32_t)(uintptr_t)io_out;
        r->desc[i].len = NET_HDR + 64;
        r->desc[i].flags = 0;
    }
    print("bench net-tx start\n");
    uint32_t sent = 0;
    while (sent < BENCH_FRAMES) {
        /* Fill the ring (every descriptor the device has returned), then one notification. */
        barrier();
        uint16_t done = ((volatile struct used *)&r->used)->idx;
        while ((uint16_t)(r->avail.idx - done) < QSIZE && sent < BENCH_FRAMES) {
            r->avail.ring[r->avail.idx % QSIZE] = (uint16_t)(r->avail.idx % QSIZE);
            barrier();
            r->avail.idx++;
            sent++;
        }
        barrier();
        REG(base, QUEUE_NOTIFY) = 1;
    }
    while (((volatile struct used *)&r->used)->idx != r->avail.idx) barrier();
    print("bench net-tx done %u\n", BENCH_FRAMES);
}

void virtio_main(uint32_t start_info)
{
    print("virtio: start\n");
    const char *cmdline = (const char *)(uintptr_t)*(volatile uint32_t *)(uintptr_t)(start_info + 24);
    int devices = 0, blocks = 0, rngs = 0;
    int bench = 0;
    for (const char *p = cmdline; p && *p; p++)
        if ((p == cmdline || p[-1] == ' ') && memcmp(p, "virtio.bench", 12) == 0) bench = 1;
    static const char key[] = "virtio_mmio.device=";
    for (const char *p = cmdline; p && *p; p++) {
        if ((p != cmdline && p[-1] != ' ') || memcmp(p, key, sizeof key - 1) != 0) continue;
        uint32_t size, base, irq;
        const char *q = parse_number(p + sizeof key - 1, &size);
        if (*q != '@') continue;
        q = parse_number(q + 1, &base);
        if (*q != ':') continue;
        parse_number(q + 1, &irq);
        uint32_t id = REG(base, DEVICE_ID);
        if (id == 0) continue;   /* a transport with no device behind it (§4.2.2: DeviceID 0) */
        if (bench) {
            if (id == 2 && blocks++ == 0) bench_block(base);
            if (id == 1) bench_net(base);
            REG(base, STATUS) = 0;
            devices++;
            continue;
        }
        print("fact device%d 0x%x irq %u size 0x%x id %u\n", devices, base, irq, size, id);
        char name[32];
        ksnprintf(name, sizeof name, "device%d-magic", devices);
        check_eq(name, REG(base, MAGIC), 0x74726976);
        ksnprintf(name, sizeof name, "device%d-version-2", devices);
        check_eq(name, REG(base, VERSION), 2);
        /* §6.1: a device MAY refuse a driver without VERSION_1 (Swiftlet does; QEMU does not). */
        print("fact device%d-features-ok-without-version-1 %d\n", devices, negotiate(base, 0, 0));
        REG(base, STATUS) = 0;
        if (id == 2) check_block(base, blocks++);
        else if (id == 4) { check_entropy(base); rngs++; }
        else if (id == 1) check_net(base);
        else if (id == 3) check_console(base);
        else if (id == 19) check_vsock(base);
        else print("fact device%d-id %u (not checked)\n", devices, id);
        REG(base, STATUS) = 0;
        devices++;
    }
    if (bench) {
        print("bench end\n");
        poweroff(0);
    }
    print("fact devices %d\n", devices);
    check(devices > 0, "devices-found", "no virtio_mmio.device= word on the command line: %s", cmdline ? cmdline : "(none)");
    summary();
    poweroff(n_fail ? 1 : 0);
}
