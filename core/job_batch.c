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


/* After a job of the batch: a failed job's work is rolled back to its
 * savepoint; a job that claims success must have left the transaction
 * open and sound, or the whole batch is run again job by job. */
static int settle_savepoint(struct job_state *js, struct job *job, int *begun,
			    char *err, size_t errlen)
{
	if (job_state_deferred(js)) {
		/* The job ran no statement: its savepoint was never made,
		 * and nothing of it needs undoing. BEGIN may wait on. */
		job_state_undefer(js);
		return 0;
	}
	*begun = 1;
	if (job->outcome != OUTCOME_OK)
		return job_state_exec(js, "ROLLBACK TO SAVEPOINT mr_job", err,
				      errlen);
	if (job_state_in_transaction(js) != 1) {
		snprintf(err, errlen,
			 "job %s left the batch's transaction failed or ended",
			 job->message_id);
		return -EIO;
	}
	return 0;
}


/* Runs the gated jobs in one transaction. Each job's savepoint, and the
 * BEGIN before the first, go out with the job's first statement rather
 * than in round trips of their own, and savepoints are not released:
 * COMMIT releases them all. Returns 0 once committed (or when no job ran
 * a statement), or -EIO when the transaction failed and nothing of it
 * stands. */
static int run_in_transaction(struct job_state *js, struct job **jobs, int n)
{
	char err[256];
	int begun = 0;

	for (int i = 0; i < n; i++) {
		if (!begun && !job_state_deferred(js))
			job_state_defer(js, "BEGIN");
		job_state_defer(js, "SAVEPOINT mr_job");
		job_state_call(js, jobs[i]);
		job_state_recover(js);
		if (settle_savepoint(js, jobs[i], &begun, err, sizeof err) < 0)
			goto fail;
	}
	while (job_state_deferred(js))
		job_state_undefer(js);
	if (begun && job_state_commit(js, err, sizeof err) < 0)
		goto fail;
	job_state_release(js);
	return 0;
fail:
	while (job_state_deferred(js))
		job_state_undefer(js);
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
