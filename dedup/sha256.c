/*
 * kdedup - SHA-256 from libcrypto, with the algorithm fetched once (see
 * sha256.h).
 */
#include "dedup/sha256.h"

#include <pthread.h>
#include <string.h>

static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;

static void fetch(void) {
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *kd_sha256_md(void) {
    pthread_once(&fetch_once, fetch);
    return sha256_md;
}

bool kd_sha256(const void *data, size_t len, unsigned char out[KD_SHA256_LEN]) {
    const EVP_MD *md = kd_sha256_md();
    unsigned int n = 0;

    if (md && EVP_Digest(len ? data : "", len, out, &n, md, NULL) == 1 &&
        n == KD_SHA256_LEN)
        return true;
    memset(out, 0, KD_SHA256_LEN);
    return false;
}
