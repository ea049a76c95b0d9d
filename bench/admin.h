/*
 * kdedup benchmarks - topics made on a real cluster with the admin API.
 */
#ifndef KD_BENCH_ADMIN_H
#define KD_BENCH_ADMIN_H

#include <stdbool.h>

/* Creates topic `name` with `partitions` partitions on the cluster at
 * bootstrap (its default replication factor); an existing one is an
 * error. Returns true when it was created; says why on stderr if not. */
bool bench_admin_topic(const char *bootstrap, const char *name, int partitions);

#endif /* KD_BENCH_ADMIN_H */
