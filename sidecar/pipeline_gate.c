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

/* Lets gate i's messages go until one has to wait. */
static void gate_turn(kd_pipeline *p, size_t i) {
    for (;;) {
        gate *g = &p->gate.v[i];
        msg *m = g->waiting.head;

        if (!m) {
            kd_pl_msg_gate_close(p, g);
            return;
        }
        if (m->due_ms > kd_mono_ms())
            return; /* its next attempt is later: the rest wait with it */
        g->waiting.head = m->next;
        if (!g->waiting.head)
            g->waiting.tail = NULL;
        g->waiting.n--;
        if (!msg_live(p, m)) {
            kd_pl_msg_abandon(p, m);
            continue;
        }
        p->gate.passing = m;
        if (m->gate_takeover)
            kd_pl_claim_takeover(p, m); /* may wait at the head again */
        else
            kd_pl_produce(p, m);
        p->gate.passing = NULL;
        if (p->gate.v[i].waiting.head == m)
            return; /* still waiting: the rest with it */
    }
}

void kd_pl_gate_turn(kd_pipeline *p) {
    for (size_t i = p->gate.n; i-- > 0;)
        gate_turn(p, i);
}
