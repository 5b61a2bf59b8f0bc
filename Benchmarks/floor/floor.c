/*
 * The floor: the least a userspace VMM can do to run a benchmark guest. It creates a VM with the
 * same in-kernel irqchip Swiftlet uses, loads the guest's PT_LOAD segments, enters it in 32-bit
 * protected mode at e_entry (the guests' PVH entry), and runs a bare KVM_RUN loop: no device
 * model, no allocation, no locks. It timestamps writes to port 0x504 (checkpoints) and stops on
 * a write to port 0xf4. Prints one JSON object.
 *
 * Usage: floor GUEST.elf
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MEMORY_SIZE (64UL << 20)

static void die(const char *what) { perror(what); exit(1); }

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static void flat(struct kvm_segment *s, uint16_t selector, uint8_t type)
{
    memset(s, 0, sizeof *s);
    s->base = 0; s->limit = 0xffffffff; s->selector = selector; s->type = type;
    s->present = 1; s->db = 1; s->s = 1; s->g = 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s GUEST.elf\n", argv[0]); return 2; }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) die(argv[1]);
    struct stat st;
    if (fstat(fd, &st) < 0) die("fstat");
    uint8_t *image = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (image == MAP_FAILED) die("mmap image");
    Elf32_Ehdr *eh = (Elf32_Ehdr *)image;
    if ((size_t)st.st_size < sizeof *eh || memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS32) {
        fprintf(stderr, "%s: not an ELF32 benchmark guest\n", argv[1]);
        return 1;
    }

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("/dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0) die("KVM_SET_TSS_ADDR");
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
    uint8_t *memory = mmap(NULL, MEMORY_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) die("mmap memory");
    struct kvm_userspace_memory_region region = { 0, 0, 0, MEMORY_SIZE, (uint64_t)(uintptr_t)memory };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");

    for (int i = 0; i < eh->e_phnum; i++) {
        Elf32_Phdr *ph = (Elf32_Phdr *)(image + eh->e_phoff + (size_t)i * eh->e_phentsize);
        if (ph->p_type != PT_LOAD) continue;
        if ((uint64_t)ph->p_paddr + ph->p_memsz > MEMORY_SIZE || ph->p_offset + ph->p_filesz > (uint64_t)st.st_size) {
            fprintf(stderr, "segment %d does not fit\n", i);
            return 1;
        }
        memcpy(memory + ph->p_paddr, image + ph->p_offset, ph->p_filesz);
    }

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");
    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
    flat(&sregs.cs, 0x08, 0xb);
    flat(&sregs.ds, 0x10, 0x3); sregs.es = sregs.ds; sregs.fs = sregs.ds; sregs.gs = sregs.ds; sregs.ss = sregs.ds;
    sregs.cr0 = 0x11; sregs.cr4 = 0; sregs.efer = 0;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
    struct kvm_regs regs = { .rip = eh->e_entry, .rflags = 2 };
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

    uint64_t exits = 0, checkpoint[3] = { 0, 0, 0 };
    uint64_t start = now_ns();
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR) continue;
            die("KVM_RUN");
        }
        exits++;
        if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
            uint32_t value = *(uint32_t *)((uint8_t *)run + run->io.data_offset);
            if (run->io.port == 0x504 && value < 3) checkpoint[value] = now_ns();
            else if (run->io.port == 0xf4) break;
        } else if (run->exit_reason == KVM_EXIT_IO || run->exit_reason == KVM_EXIT_MMIO) {
            continue;   /* reads: leave the data as it is */
        } else {
            fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
            return 1;
        }
    }
    printf("{\"exits\": %llu, \"checkpoint1Nanoseconds\": %llu, \"checkpoint2Nanoseconds\": %llu, \"runNanoseconds\": %llu}\n",
           (unsigned long long)exits, (unsigned long long)(checkpoint[1] ? checkpoint[1] - start : 0),
           (unsigned long long)(checkpoint[2] ? checkpoint[2] - start : 0), (unsigned long long)(now_ns() - start));
    return 0;
}
