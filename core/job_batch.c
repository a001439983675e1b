#include "job_batch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "body_buf.h"
#include "job_lua.h"
#include "log.h"


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
	/* A statement sent ahead failed: which job it was is not known
	 * here, so none of the batch may be judged by it. */
	if (job_state_pipe_failed(js, err, errlen))
		return -EIO;
	if (job->outcome != OUTCOME_OK)
		return job_state_rollback_job(
			js, "ROLLBACK TO SAVEPOINT mr_job", err, errlen);
	/* With statements still queued the status is not known yet; the
	 * COMMIT's answer covers them. */
	if (!job_state_pipe_pending(js) && job_state_in_transaction(js) != 1) {
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
 * stands. Bodies are kept until the COMMIT has answered: when it fails,
 * every job may still be run again or retried from its body. */
static int run_in_transaction(struct job_state *js, struct job **jobs, int n,
			      char *err, size_t errlen)
{
	int begun = 0;

	job_state_keep_bodies(js, 1);
	job_state_pipe(js, 1);
	for (int i = 0; i < n; i++) {
		if (!begun && !job_state_deferred(js))
			job_state_defer(js, "BEGIN");
		job_state_defer(js, "SAVEPOINT mr_job");
		job_state_call(js, jobs[i]);
		job_state_recover(js);
		if (settle_savepoint(js, jobs[i], &begun, err, errlen) < 0)
			goto fail;
	}
	while (job_state_deferred(js))
		job_state_undefer(js);
	if (begun && job_state_commit(js, err, errlen) < 0)
		goto fail;
	job_state_release(js);
	job_state_keep_bodies(js, 0);
	forget_bodies(jobs, n);
	return 0;
fail:
	while (job_state_deferred(js))
		job_state_undefer(js);
	if (n > 1)
		LOG(LOG_WARN, "batch_failed", LF_I("jobs", n),
		    LF_S("reason", err));
	job_state_release(js);
	job_state_keep_bodies(js, 0);
	return -EIO;
}


/* A job on its own. A batchable script leaves transactions to the host,
 * so it gets one of its own too: its work stands only if it succeeds,
 * as it would have in a batch. A COMMIT that fails (the server going
 * down) turns a job that returned true into a failed one, which
 * failure.lua may retry from the body run_in_transaction() kept. */
static void run_alone(struct job_state *js, struct job *job)
{
	char err[256];
	int rc;

	if (!job_state_batchable(js)) {
		job_state_call(js, job);
		job_state_after(js, job);
		return;
	}
	rc = run_in_transaction(js, &job, 1, err, sizeof err);
	if (rc < 0 && job->outcome == OUTCOME_OK) {
		job->outcome = OUTCOME_JOB_ERROR;
		snprintf(job->reason, sizeof job->reason, "%s", err);
	}
	forget_bodies(&job, 1);
	job_state_after(js, job);
}


int job_batch_size(const struct job_state *js, int prefetch)
{
	int n = prefetch / 8;

	if (!job_state_batchable(js))
		return JOB_BATCH_MIN;
	if (n < JOB_BATCH_MIN)
		return JOB_BATCH_MIN;
	return n > JOB_BATCH_MAX ? JOB_BATCH_MAX : n;
}


void job_batch_run_fn(void *ctx, struct job **jobs, int n)
{
	struct job_state *js = ctx;
	struct job *batch[JOB_BATCH_MAX];
	char err[256];
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
	if (run_in_transaction(js, batch, nb, err, sizeof err) < 0) {
		for (int i = 0; i < nb; i++) {
			batch[i]->outcome = OUTCOME_OK;
			batch[i]->reason[0] = '\0';
			run_alone(js, batch[i]);
		}
	}
}
