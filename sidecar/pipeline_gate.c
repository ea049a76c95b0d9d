/*
 * kdedup - the pipeline's gates: order kept behind an orphan being resolved.
 *
 * A claim left by a dead run is resolved from the downstream topic by a scan
 * read a step a loop turn (recovery.h), so the loop goes on meanwhile. The
 * message that met it waits at the head of its partition's gate, and every
 * message of that partition consumed after it waits behind it, in order:
 * those already claimed to be produced, orphans of their own to be taken
 * over. Once the head is resolved (found downstream, or forwarded), the
 * gate lets the rest go in order, up to the next that has to wait. What
 * waits is bounded by the messages in flight (backpressure), and a gate
 * waiting long enough holds its partition back (pipeline_flow.c).
 */
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

#include <stdlib.h>

static gate *gate_find(kd_pipeline *p, size_t route, int32_t partition) {
    for (size_t i = 0; i < p->ngates; i++)
        if (p->gates[i].route == route && p->gates[i].partition == partition)
            return &p->gates[i];
    return NULL;
}

static gate *gate_open(kd_pipeline *p, size_t route, int32_t partition) {
    gate *g;

    if (p->ngates == p->gates_cap) {
        size_t cap = p->gates_cap ? p->gates_cap * 2 : 8;

        if (!(g = realloc(p->gates, cap * sizeof(*g))))
            return NULL;
        p->gates = g;
        p->gates_cap = cap;
    }
    g = &p->gates[p->ngates++];
    *g = (gate){.route = route, .partition = partition};
    return g;
}

static void gate_close(kd_pipeline *p, gate *g) {
    *g = p->gates[--p->ngates];
}

bool kd_pl_gated(kd_pipeline *p, msg *m, bool takeover) {
    gate *g;

    if (!p->ngates || p->gate_passing == m ||
        !(g = gate_find(p, m->route, m->rkm->partition)))
        return false;
    m->gate_takeover = takeover;
    list_push(&g->waiting, m);
    return true;
}

void kd_pl_gate_wait(kd_pipeline *p, msg *m) {
    gate *g = gate_find(p, m->route, m->rkm->partition);

    if (!g && !(g = gate_open(p, m->route, m->rkm->partition))) {
        kd_pl_schedule_retry(p, m, ORPHAN_WAIT_MS); /* out of memory: unordered */
        return;
    }
    m->gate_takeover = true;
    if (p->gate_passing == m) { /* back at the head it just left */
        m->next = g->waiting.head;
        g->waiting.head = m;
        if (!g->waiting.tail)
            g->waiting.tail = m;
        g->waiting.n++;
    } else {
        list_push(&g->waiting, m);
    }
}

/* Lets gate i's messages go until one has to wait. */
static void gate_turn(kd_pipeline *p, size_t i) {
    for (;;) {
        gate *g = &p->gates[i];
        msg *m = g->waiting.head;

        if (!m) {
            gate_close(p, g);
            return;
        }
        g->waiting.head = m->next;
        if (!g->waiting.head)
            g->waiting.tail = NULL;
        g->waiting.n--;
        if (!msg_live(p, m)) {
            kd_pl_msg_abandon(p, m);
            continue;
        }
        p->gate_passing = m;
        if (m->gate_takeover)
            kd_pl_takeover(p, m); /* may wait at the head again */
        else
            kd_pl_produce(p, m);
        p->gate_passing = NULL;
        if (p->gates[i].waiting.head == m)
            return; /* still waiting: the rest with it */
    }
}

void kd_pl_gates_turn(kd_pipeline *p) {
    for (size_t i = p->ngates; i-- > 0;)
        gate_turn(p, i);
}

void kd_pl_gates_abandon(kd_pipeline *p, bool all_parts) {
    for (size_t i = p->ngates; i-- > 0;) {
        gate *g = &p->gates[i];
        msg *first = g->waiting.head;

        if (!all_parts && first && msg_live(p, first))
            continue; /* one ownership per gate: its head tells */
        msg_list all = list_take(&g->waiting);
        gate_close(p, g);
        for (msg *m = all.head, *next; m; m = next) {
            next = m->next;
            kd_pl_msg_abandon(p, m);
        }
    }
}
