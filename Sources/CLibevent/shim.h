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
#include <event2/event.h>
#include <event2/thread.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#endif
