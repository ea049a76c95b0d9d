/*
 * kdedup - run records: where each downstream partition ended when a run
 * started (see recovery.h).
 */
#include "sidecar/recovery_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUN_MAGIC "kdedup-run v1\n"

size_t kd_recovery_run_stream(uint64_t boot_id, char *buf, size_t size) {
    int n = snprintf(buf, size, "kdedup:run:%016" PRIx64, boot_id);

    return n < 0 ? 0 : (size_t)n;
}

bool kd_recovery_run_lookup(const void *payload, size_t len, const char *topic,
                            int32_t partition, int64_t *offset) {
    const char *p = payload, *end = p + len;
    size_t tlen = strlen(topic), mlen = strlen(RUN_MAGIC);

    if (len < mlen || memcmp(p, RUN_MAGIC, mlen) != 0)
        return false;
    for (p += mlen; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        char line[320], name[256];
        long long part, off;
        size_t ll;

        if (!nl)
            return false;
        ll = (size_t)(nl - p);
        if (ll < sizeof(line)) {
            memcpy(line, p, ll);
            line[ll] = '\0';
            if (sscanf(line, "%lld %lld %255s", &part, &off, name) == 3 &&
                part == partition && strlen(name) == tlen && !strcmp(name, topic) &&
                off >= 0) {
                *offset = off;
                return true;
            }
        }
        p = nl + 1;
    }
    return false;
}

kd_err kd_recovery_record_run(kd_recovery *rc, rd_kafka_t *producer, uint64_t boot_id,
                              const int *out_partitions, int64_t *const *ends,
                              char *errstr, size_t errstr_size) {
    size_t cap = 4096, len = 0;
    char *text = malloc(cap), stream[32];
    kd_err err = KD_OK;

    if (!text) {
        snprintf(errstr, errstr_size, "out of memory");
        return KD_ERR_STORE;
    }
    len = (size_t)snprintf(text, cap, "%s", RUN_MAGIC);
    for (size_t r = 0; r < rc->cfg->nroutes && err == KD_OK; r++) {
        const char *topic = rc->cfg->routes[r].to;

        for (int32_t part = 0; part < out_partitions[r]; part++) {
            int64_t hi = 0;
            rd_kafka_resp_err_t e =
                kd_rc_offset_at(producer, topic, part, RD_KAFKA_OFFSET_END, &hi);
            char *grown;

            if (e) {
                snprintf(errstr, errstr_size, "end offset of %s/%" PRId32 ": %s", topic,
                         part, rd_kafka_err2str(e));
                err = KD_ERR_STORE;
                break;
            }
            if (cap - len < 300 && (grown = realloc(text, cap *= 2)))
                text = grown;
            else if (cap - len < 300) {
                snprintf(errstr, errstr_size, "out of memory");
                err = KD_ERR_STORE;
                break;
            }
            len += (size_t)snprintf(text + len, cap - len, "%" PRId32 " %" PRId64 " %s\n",
                                    part, hi, topic);
            if (ends)
                ends[r][part] = hi;
        }
    }
    rc->boot_id = boot_id;
    if (err == KD_OK) {
        size_t slen = kd_recovery_run_stream(boot_id, stream, sizeof(stream));

        err = kd_store_append(rc->store, stream, slen, 0, text, len);
        if (err != KD_OK) {
            char why[400];

            snprintf(errstr, errstr_size, "store: writing the run record failed: %s",
                     kd_store_last_error(rc->store, why, sizeof(why)));
        }
    }
    free(text);
    return err;
}
