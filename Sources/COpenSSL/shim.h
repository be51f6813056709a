// Shim over OpenSSL (Debian libssl-dev) and libevent's OpenSSL bufferevents for Swift.
// System headers first, as in CLibevent's shim (Debian's event-config.h defines _GNU_SOURCE).
// Many OpenSSL calls Larder needs are macros over SSL_ctrl / SSL_CTX_ctrl, which Swift cannot
// call; the small inline functions below give them names.
#ifndef LARDER_OPENSSL_SHIM_H
#define LARDER_OPENSSL_SHIM_H
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

static inline long larder_ssl_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
static inline long larder_ssl_ctx_set_min_proto(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline unsigned long larder_ssl_ctx_set_options(SSL_CTX *ctx, unsigned long op) {
    return SSL_CTX_set_options(ctx, op);
}
static inline long larder_ssl_ctx_read_ahead(SSL_CTX *ctx) { SSL_CTX_set_read_ahead(ctx, 1); return 1; }
static inline long larder_ssl_ctx_sess_off(SSL_CTX *ctx) {
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
}
static inline long larder_ssl_set_max_tls12(SSL *ssl) { return SSL_set_max_proto_version(ssl, TLS1_2_VERSION); }
static inline int larder_ssl_version_tls12(void) { return TLS1_2_VERSION; }
static inline int larder_ssl_version_tls13(void) { return TLS1_3_VERSION; }
static inline long larder_mode_release_buffers(void) { return SSL_MODE_RELEASE_BUFFERS; }
static inline long larder_mode_partial_write(void) {
    return SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
}
static inline unsigned long larder_op_no_renegotiation(void) {
    return SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE;
}
/* The first queued OpenSSL error as text (empty when none: len > 0); clears the queue. */
static inline void larder_ssl_error_text(char *buf, size_t len) {
    unsigned long e = ERR_get_error();
    buf[0] = 0;
    if (e != 0) { ERR_error_string_n(e, buf, len); }
    ERR_clear_error();
}
#endif
