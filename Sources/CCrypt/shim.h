// crypt(3) from libxcrypt (Debian's libcrypt1, required by every system; headers in
// libcrypt-dev, which libc6-dev pulls in): verifies the bcrypt hashes ($2b$/$2y$) of the
// metrics endpoint's basic-auth file, the format Prometheus' web.config.file uses, without a
// Swift dependency.
#ifndef LARDER_CRYPT_SHIM_H
#define LARDER_CRYPT_SHIM_H
#include <crypt.h>
#endif
