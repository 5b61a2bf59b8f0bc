/* struct xen_start_info (xen64 boot: RSI at entry), as the probe and the xenvcpu guest read it. */
#ifndef GUEST_XENSTART_H
#define GUEST_XENSTART_H

#include <stddef.h>
#include <stdint.h>

struct xen_start_info {
    char magic[32];
    uint64_t nr_pages;
    uint64_t shared_info;
    uint32_t flags, pad0;
    uint64_t store_mfn;
    uint32_t store_evtchn, pad1;
    uint64_t console_mfn;
    uint32_t console_evtchn, pad2;
    uint64_t pt_base;
    uint64_t nr_pt_frames;
    uint64_t mfn_list;
    uint64_t mod_start;
    uint64_t mod_len;
    char cmd_line[1024];
    uint64_t first_p2m_pfn;
    uint64_t nr_p2m_frames;
};
_Static_assert(sizeof(struct xen_start_info) == 1168, "start_info is 1168 bytes");

#endif
