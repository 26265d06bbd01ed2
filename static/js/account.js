// The account page while an import or "Export my data" runs in the background: poll the
// jobs' progress once a second, show "n of m conversations", and reload the page (which
// renders the report or the download link) once a job has ended.

const POLL_MS = 1000;
const LIVE = new Set(["queued", "running"]);

function progressText(job) {
  if (job.status === "queued") {
    return job.kind === "import" ? "Import queued: it starts in a moment."
                                 : "Export queued: it starts in a moment.";
  }
  if (job.kind === "import") {
    return job.total === null ? "Checking the file…"
                              : `Importing: ${job.done} of ${job.total} conversations.`;
  }
  return `Building your export: ${job.done} of ${job.total ?? "…"} conversations.`;
}

function setup() {
  const boxes = [...document.querySelectorAll("[data-job-kind]")]
    .filter((box) => LIVE.has(box.dataset.jobStatus));
  if (!boxes.length) return;

  const poll = async () => {
    let jobs;
    try {
      const response = await fetch("/account/jobs.json", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(String(response.status));
      jobs = await response.json();
    } catch {
      setTimeout(poll, POLL_MS * 3); // the server is busy or restarting: ask again later
      return;
    }
    for (const box of boxes) {
      const job = jobs[box.dataset.jobKind];
      if (!job || !job.live) {
        window.location.reload();
        return;
      }
      box.dataset.jobStatus = job.status;
      const line = box.querySelector("[data-job-progress]");
      if (line) line.textContent = progressText(job);
    }
    setTimeout(poll, POLL_MS);
  };
  setTimeout(poll, POLL_MS);
}

setup();
