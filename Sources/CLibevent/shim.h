// Shim over libevent for Swift. System headers come first: Debian's event-config.h defines
// _GNU_SOURCE, and including it before <sys/types.h> breaks the fd_set definition that
// Glibc's Swift module also sees (see SWIFT-LIBEVENT-NOTES.md).
#ifndef LARDER_LIBEVENT_SHIM_H
#define LARDER_LIBEVENT_SHIM_H
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <malloc.h>   /* mallopt: Larder tunes glibc malloc trimming at start */
#include <sys/prctl.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <event2/bufferevent.h>  /* the metrics endpoint counts its connections' bufferevents */
#include <event2/listener.h>     /* the metrics endpoint's own listener (EMFILE back-off) */

/* CPU timestamp counter, for per-command latency: about 25 cycles against ~60-100 for
   clock_gettime through the vDSO. Larder calibrates it against CLOCK_MONOTONIC at start and
   falls back to the clock where there is no usable TSC. */
static inline unsigned long long larder_ticks(void) {
#if defined(__x86_64__)
    unsigned int lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((unsigned long long)hi << 32) | lo;
#else
    return 0;
#endif
}

/* Names the calling thread (shown by top -H and in crash reports; at most 15 bytes). prctl is
   variadic, which Swift cannot call. */
static inline void larder_name_thread(const char *name) {
    prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}
#endif
