/*
 * kdedup - the entry codec (layout in entry.h).
 */
#include "dedup/entry.h"

#include <stdlib.h>
#include <string.h>

#define ENTRY_MAGIC0 'K'
#define ENTRY_MAGIC1 'D'
#define ENTRY_FIXED 17 /* magic, version, kind, flags, timestamp, key_len */
#define FLAG_RECEIPT 0x01u
#define FLAG_OWNER 0x02u
#define FLAG_FINGERPRINT 0x04u
#define FLAG_FORGET 0x08u /* version 2 tombstones */
#define FLAGS_KNOWN (FLAG_RECEIPT | FLAG_OWNER | FLAG_FINGERPRINT)
#define VERSION_REASONED 2 /* a tombstone that says why it was written */

static unsigned char *put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    return p + 4;
}

static unsigned char *put_u64(unsigned char *p, uint64_t v) {
    put_u32(p, (uint32_t)(v >> 32));
    return put_u32(p + 4, (uint32_t)v);
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const unsigned char *p) {
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

size_t kd_entry_encoded_size(const kd_entry *e) {
    size_t n = ENTRY_FIXED;

    if (e->key_len > UINT32_MAX || (e->has_receipt && e->receipt_len > UINT32_MAX))
        return 0;
    n += e->key_len;
    if (e->has_owner)
        n += 8;
    if (e->has_fingerprint)
        n += KD_ENTRY_FINGERPRINT_LEN;
    if (e->has_receipt)
        n += 4 + e->receipt_len;
    return n;
}

kd_err kd_entry_encode(const kd_entry *e, void *buf, size_t buf_size, size_t *out_len) {
    size_t need = kd_entry_encoded_size(e);
    unsigned char *p = buf;

    if (need == 0 || need > buf_size)
        return KD_ERR_SERIALIZATION;
    if (e->kind != KD_ENTRY_ACTIVE && e->kind != KD_ENTRY_TOMBSTONE)
        return KD_ERR_SERIALIZATION;
    if (e->kind == KD_ENTRY_TOMBSTONE && (e->has_receipt || e->has_fingerprint))
        return KD_ERR_SERIALIZATION;
    if (e->has_fingerprint && !e->fingerprint)
        return KD_ERR_SERIALIZATION;
    if ((e->kind == KD_ENTRY_ACTIVE && e->reason != KD_TOMB_UNKNOWN) ||
        (e->reason != KD_TOMB_UNKNOWN && e->reason != KD_TOMB_RELEASE &&
         e->reason != KD_TOMB_FORGET))
        return KD_ERR_SERIALIZATION;

    *p++ = ENTRY_MAGIC0;
    *p++ = ENTRY_MAGIC1;
    *p++ = e->reason != KD_TOMB_UNKNOWN ? VERSION_REASONED : 1;
    *p++ = (unsigned char)e->kind;
    *p++ = (unsigned char)((e->has_receipt ? FLAG_RECEIPT : 0) |
                           (e->has_owner ? FLAG_OWNER : 0) |
                           (e->has_fingerprint ? FLAG_FINGERPRINT : 0) |
                           (e->reason == KD_TOMB_FORGET ? FLAG_FORGET : 0));
    p = put_u64(p, e->timestamp_ms);
    p = put_u32(p, (uint32_t)e->key_len);
    if (e->key_len)
        memcpy(p, e->key, e->key_len);
    p += e->key_len;
    if (e->has_owner)
        p = put_u64(p, e->owner);
    if (e->has_fingerprint) {
        memcpy(p, e->fingerprint, KD_ENTRY_FINGERPRINT_LEN);
        p += KD_ENTRY_FINGERPRINT_LEN;
    }
    if (e->has_receipt) {
        p = put_u32(p, (uint32_t)e->receipt_len);
        if (e->receipt_len)
            memcpy(p, e->receipt, e->receipt_len);
        p += e->receipt_len;
    }
    *out_len = (size_t)(p - (unsigned char *)buf);
    return KD_OK;
}

kd_err kd_entry_encode_alloc(const kd_entry *e, void **out, size_t *out_len) {
    size_t need = kd_entry_encoded_size(e);
    void *buf;
    kd_err err;

    if (need == 0)
        return KD_ERR_SERIALIZATION;
    if (!(buf = malloc(need)))
        return KD_ERR_STORE;
    if ((err = kd_entry_encode(e, buf, need, out_len)) != KD_OK) {
        free(buf);
        return err;
    }
    *out = buf;
    return KD_OK;
}

kd_err kd_entry_decode(const void *buf, size_t len, kd_entry *out) {
    const unsigned char *p = buf, *end;
    unsigned flags;
    size_t n;

    if (!buf || len < ENTRY_FIXED)
        return KD_ERR_SERIALIZATION;
    end = p + len;
    if (p[0] != ENTRY_MAGIC0 || p[1] != ENTRY_MAGIC1 ||
        (p[2] != 1 && p[2] != VERSION_REASONED))
        return KD_ERR_SERIALIZATION;
    memset(out, 0, sizeof(*out));
    if (p[3] != KD_ENTRY_ACTIVE && p[3] != KD_ENTRY_TOMBSTONE)
        return KD_ERR_SERIALIZATION;
    out->kind = (kd_entry_kind)p[3];
    flags = p[4];
    if (p[2] == VERSION_REASONED) { /* a tombstone, and why */
        if (out->kind != KD_ENTRY_TOMBSTONE)
            return KD_ERR_SERIALIZATION;
        out->reason = flags & FLAG_FORGET ? KD_TOMB_FORGET : KD_TOMB_RELEASE;
        flags &= ~FLAG_FORGET;
    }
    if ((flags & ~FLAGS_KNOWN) ||
        (out->kind == KD_ENTRY_TOMBSTONE && (flags & (FLAG_RECEIPT | FLAG_FINGERPRINT))))
        return KD_ERR_SERIALIZATION;
    out->timestamp_ms = get_u64(p + 5);
    n = get_u32(p + 13);
    p += ENTRY_FIXED;
    if ((size_t)(end - p) < n)
        return KD_ERR_SERIALIZATION;
    out->key = (const char *)p;
    out->key_len = n;
    p += n;
    if (flags & FLAG_OWNER) {
        if (end - p < 8)
            return KD_ERR_SERIALIZATION;
        out->has_owner = true;
        out->owner = get_u64(p);
        p += 8;
    }
    if (flags & FLAG_FINGERPRINT) {
        if (end - p < KD_ENTRY_FINGERPRINT_LEN)
            return KD_ERR_SERIALIZATION;
        out->has_fingerprint = true;
        out->fingerprint = p;
        p += KD_ENTRY_FINGERPRINT_LEN;
    }
    if (flags & FLAG_RECEIPT) {
        if (end - p < 4)
            return KD_ERR_SERIALIZATION;
        n = get_u32(p);
        p += 4;
        if ((size_t)(end - p) < n)
            return KD_ERR_SERIALIZATION;
        out->has_receipt = true;
        out->receipt = p;
        out->receipt_len = n;
        p += n;
    }
    return p == end ? KD_OK : KD_ERR_SERIALIZATION;
}
