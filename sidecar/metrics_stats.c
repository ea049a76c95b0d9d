/*
 * kdedup - metrics: librdkafka statistics (STATISTICS.md): consumer lag per
 * partition, broker states and round-trip times, the producer's queue, the
 * group's state (file map: metrics_int.h).
 */
#include "sidecar/metrics_int.h"

#include <cjson/cJSON.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static double num(const cJSON *obj, const char *name, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static const char *str(const cJSON *obj, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    return cJSON_IsString(v) ? v->valuestring : "";
}

static void read_lags(const cJSON *root, stats_view *v) {
    const cJSON *topics = cJSON_GetObjectItemCaseSensitive(root, "topics"), *t, *p;

    v->nlags = 0;
    cJSON_ArrayForEach(t, topics) {
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(t, "partitions")) {
            int32_t part = (int32_t)num(p, "partition", -1);
            double l = num(p, "consumer_lag", -1);

            if (part < 0 || l < 0 || v->nlags == MAX_LAGS)
                continue; /* the internal UA partition, or unknown lag */
            snprintf(v->lags[v->nlags].topic, sizeof(v->lags[0].topic), "%s", t->string);
            v->lags[v->nlags].partition = part;
            v->lags[v->nlags++].lag = (int64_t)l;
        }
    }
}

static void read_brokers(const cJSON *root, stats_view *v, bool consumer) {
    const cJSON *b;

    if (consumer)
        v->cluster.brokers_up = v->cluster.brokers_known = 0;
    else
        v->nrtts = 0;
    cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(root, "brokers")) {
        if (num(b, "nodeid", -1) < 0)
            continue; /* bootstrap and internal entries */
        if (consumer) {
            v->cluster.brokers_known++;
            v->cluster.brokers_up += !strcmp(str(b, "state"), "UP");
        } else if (v->nrtts < MAX_BROKERS) {
            const cJSON *rtt = cJSON_GetObjectItemCaseSensitive(b, "rtt");

            snprintf(v->rtts[v->nrtts].name, sizeof(v->rtts[0].name), "%s", b->string);
            v->rtts[v->nrtts++].rtt_s = num(rtt, "avg", 0) / 1e6;
        }
    }
}

int kd_metrics_update_stats(kd_metrics *m, const char *json, size_t len) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *cgrp;
    bool consumer;

    if (!root)
        return -1;
    consumer = !strcmp(str(root, "type"), "consumer");
    pthread_mutex_lock(&m->lock);
    read_brokers(root, &m->view, consumer);
    if (consumer) {
        read_lags(root, &m->view);
        cgrp = cJSON_GetObjectItemCaseSensitive(root, "cgrp");
        m->view.cluster.group_steady = !strcmp(str(cgrp, "state"), "up") &&
                                       !strcmp(str(cgrp, "join_state"), "steady");
        m->view.cluster.assignment = (int)num(cgrp, "assignment_size", 0);
    } else {
        m->view.producer_queue = (int64_t)num(root, "msg_cnt", -1);
    }
    pthread_mutex_unlock(&m->lock);
    cJSON_Delete(root);
    return 0;
}

void kd_metrics_cluster_view(kd_metrics *m, kd_cluster_view *out) {
    pthread_mutex_lock(&m->lock);
    *out = m->view.cluster;
    pthread_mutex_unlock(&m->lock);
}
