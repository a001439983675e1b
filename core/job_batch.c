#include "job_batch.h"

#include <errno.h>
#include <stdlib.h>

#include "body_buf.h"
#include "job_lua.h"
#include "log.h"


static void run_alone(struct job_state *js, struct job *job)
{
	job_state_call(js, job);
	job_state_after(js, job);
}


/* Frees the bodies a batch kept, but a failed job's: the loop may still
 * publish it as a retry. */
static void forget_bodies(struct job **jobs, int n)
{
	for (int i = 0; i < n; i++) {
		if (jobs[i]->outcome == OUTCOME_JOB_ERROR)
			continue;
		body_buf_put(jobs[i]->body);
		jobs[i]->body = NULL;
	}
}


/* Runs the gated jobs in one transaction. Returns 0 once committed, or
 * -EIO when the transaction failed and nothing of it stands. */
static int run_in_transaction(struct job_state *js, struct job **jobs, int n)
{
	char err[256];

	if (job_state_exec(js, "BEGIN", err, sizeof err) < 0)
		goto fail;
	for (int i = 0; i < n; i++) {
		if (job_state_exec(js, "SAVEPOINT mr_job", err, sizeof err) < 0)
			goto fail;
		job_state_call(js, jobs[i]);
		job_state_recover(js);
		if (job_state_exec(js,
				   jobs[i]->outcome == OUTCOME_OK
					   ? "RELEASE SAVEPOINT mr_job"
					   : "ROLLBACK TO SAVEPOINT mr_job",
				   err, sizeof err) < 0)
			goto fail;
	}
	if (job_state_exec(js, "COMMIT", err, sizeof err) < 0)
		goto fail;
	job_state_release(js);
	return 0;
fail:
	LOG(LOG_WARN, "batch_failed", LF_I("jobs", n), LF_S("reason", err));
	job_state_release(js);
	return -EIO;
}


void job_batch_run_fn(void *ctx, struct job **jobs, int n)
{
	struct job_state *js = ctx;
	struct job *batch[JOB_BATCH_MAX];
	int nb = 0;

	for (int i = 0; i < n; i++) {
		if (job_state_gate(js, jobs[i]) < 0)
			continue;
		if (!job_state_batchable(js) || n == 1 ||
		    jobs[i]->body_len > JOB_BATCH_BODY_MAX ||
		    nb == JOB_BATCH_MAX)
			run_alone(js, jobs[i]);
		else
			batch[nb++] = jobs[i];
	}
	if (nb == 0)
		return;
	job_state_keep_bodies(js, 1);
	if (run_in_transaction(js, batch, nb) < 0) {
		for (int i = 0; i < nb; i++) {
			batch[i]->outcome = OUTCOME_OK;
			batch[i]->reason[0] = '\0';
			job_state_keep_bodies(js, 0);
			run_alone(js, batch[i]);
		}
	}
	job_state_keep_bodies(js, 0);
	forget_bodies(batch, nb);
}
