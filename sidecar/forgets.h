/*
 * kdedup - forget records: what a forget (DELETE /v1/keys) writes to the
 * downstream topic so that it travels with the partition, built and
 * recognised here.
 *
 * A forget lives in the store of the replica that answered it. The next
 * owner of the key's partition, or the same pod restarted on an empty
 * store, would learn the key again from its delivery downstream, and drop
 * the copy the operator asked for. So the forget is also written next to
 * that delivery: a record on the downstream partition its receipt names,
 * with no key and no value, and these headers:
 *
 *   kdedup-forget        "1"
 *   kdedup-source        "<from>/<partition>/<offset>": the source message
 *                        of the delivery forgotten
 *   kdedup-run           "0000000000000000" (no run: an operator's)
 *   kdedup-forwarded-at  when it was forgotten (wall ms)
 *   kdedup-key           the idempotency key
 *   kdedup-signature     with dedup.signing_key: over the same fields as a
 *                        forwarded record's, signed apart (kd_signed.forget),
 *                        so that neither passes for the other
 *
 * A handover that reads it forgets the key when the key's completion came
 * from a record before it in that partition (kd_dedup_forget_replay),
 * dated when it was forgotten: what was forwarded after it is learned
 * again. Recovery and uncertain-delivery lookups never take it for a
 * delivery. Consumers of the downstream topic skip records that carry
 * kdedup-forget.
 */
#ifndef KD_FORGETS_H
#define KD_FORGETS_H

#include "config/config.h"

#include <librdkafka/rdkafka.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The run id a forget record carries: none. */
#define KD_FORGET_RUN "0000000000000000"

/* A forget to record downstream. */
typedef struct kd_forget_record {
    const char *from;      /* the route's source topic */
    const char *to;        /* its downstream topic */
    int32_t partition;     /* downstream: where the forgotten delivery is */
    int32_t src_partition; /* the delivery's source message */
    int64_t src_offset;
    const void *key; /* the idempotency key */
    size_t key_len;
    uint64_t at_ms; /* when it was forgotten (wall) */
} kd_forget_record;

/* Writes f to f->to / f->partition through a producer of its own, made from
 * cfg's kafka settings (kafka.producer, bootstrap brokers), signed with
 * dedup.signing_key when set, and waits for the broker's answer (at most
 * about 15 s). Returns true with the record's offset in *offset, or false
 * with the reason in errstr. Any thread. */
bool kd_forgets_write(const kd_config *cfg, const char *brokers,
                      const kd_forget_record *f, int64_t *offset, char *errstr,
                      size_t errstr_size);

#endif /* KD_FORGETS_H */
