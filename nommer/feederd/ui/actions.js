// Cancel and retry buttons, shared by the job table and the job page.

import {api} from "./api.js";
import {FINAL_STATES, RETRYABLE_STATES, h, shortId} from "./dom.js";

/** Which actions a job has now: a subset of ["cancel", "retry"]. */
export function actionsOf(job, features) {
  const out = [];
  if (!FINAL_STATES.has(job.job_state)) out.push("cancel");
  if (features.retry && RETRYABLE_STATES.has(job.job_state)) out.push("retry");
  return out;
}

const LABELS = {cancel: "Cancel", retry: "Retry"};

/**
 * Keep ``container``'s buttons equal to the job's actions, reusing the buttons that stay
 * (so a focused button keeps the focus while events update the job).
 * ``ctx``: {features, flash(text, isError)}; ``onDone(job)`` gets the job the API answered.
 */
export function syncActions(container, job, ctx, onDone) {
  const wanted = actionsOf(job, ctx.features);
  const have = [...container.querySelectorAll("button[data-action]")];
  if (have.map((b) => b.dataset.action).join() === wanted.join()) return;
  const focused = have.find((b) => b === document.activeElement);
  const buttons = wanted.map((action) => have.find((b) => b.dataset.action === action)
                                         || actionButton(action, job.job_id, ctx, onDone));
  container.replaceChildren(...buttons);
  if (focused && !buttons.includes(focused)) {
    (buttons[0] || container.closest("[tabindex], tr, section") || document.body).focus?.();
  }
}

function actionButton(action, jobId, ctx, onDone) {
  const button = h("button", {type: "button", class: `action action-${action}`, dataset: {action},
                              "aria-label": `${LABELS[action]} job ${shortId(jobId)}`}, LABELS[action]);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const answer = await api("POST", `job/${encodeURIComponent(jobId)}/${action}`);
      ctx.flash(action === "cancel" ? `Job ${shortId(jobId)} canceled.` : `Job ${shortId(jobId)} queued again.`);
      onDone(answer.job);
    } catch (e) {
      ctx.flash(`${LABELS[action]} of job ${shortId(jobId)} failed: ${e.message}`, true);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
