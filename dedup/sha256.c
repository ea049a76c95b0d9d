/*
 * kdedup - SHA-256 from libcrypto, with the algorithm fetched once and a
 * digest context per thread (see sha256.h).
 */
#include "dedup/sha256.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A thread's contexts: one for kd_sha256(), one for kd_sha256_scratch()'s
 * callers, so a one-shot digest never lands in a multi-step one. */
typedef struct thread_ctx {
    EVP_MD_CTX *oneshot;
    EVP_MD_CTX *scratch;
} thread_ctx;

static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;
static pthread_key_t ctx_key;
static bool ctx_key_ok;

/* At a thread's exit: frees its contexts. */
static void thread_ctx_free(void *p) {
    thread_ctx *t = p;

    EVP_MD_CTX_free(t->oneshot);
    EVP_MD_CTX_free(t->scratch);
    free(t);
}

static void fetch(void) {
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    ctx_key_ok = pthread_key_create(&ctx_key, thread_ctx_free) == 0;
}

const EVP_MD *kd_sha256_md(void) {
    pthread_once(&fetch_once, fetch);
    return sha256_md;
}

/* The calling thread's contexts, made on its first call; NULL when out of
 * memory. */
static thread_ctx *thread_ctxs(void) {
    thread_ctx *t;

    pthread_once(&fetch_once, fetch);
    if (!ctx_key_ok)
        return NULL;
    if ((t = pthread_getspecific(ctx_key)))
        return t;
    if (!(t = calloc(1, sizeof(*t))))
        return NULL;
    t->oneshot = EVP_MD_CTX_new();
    t->scratch = EVP_MD_CTX_new();
    if (!t->oneshot || !t->scratch || pthread_setspecific(ctx_key, t) != 0) {
        thread_ctx_free(t);
        return NULL;
    }
    return t;
}

EVP_MD_CTX *kd_sha256_scratch(void) {
    thread_ctx *t = thread_ctxs();

    return t ? t->scratch : NULL;
}

bool kd_sha256(const void *data, size_t len, unsigned char out[KD_SHA256_LEN]) {
    const EVP_MD *md = kd_sha256_md();
    thread_ctx *t = thread_ctxs();
    unsigned int n = 0;

    if (md && t && EVP_DigestInit_ex(t->oneshot, md, NULL) == 1 &&
        EVP_DigestUpdate(t->oneshot, len ? data : "", len) == 1 &&
        EVP_DigestFinal_ex(t->oneshot, out, &n) == 1 && n == KD_SHA256_LEN)
        return true;
    memset(out, 0, KD_SHA256_LEN);
    return false;
}
