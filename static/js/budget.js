// The member's budget meter (with the org's and each budgeted group's), the estimated
// cost of the next turn per reasoning effort, and "Request more" when the member's own
// budget is what refused a turn. Reads /budget/ (JSON) and refreshes it after every
// finished answer and every refusal.

import { csrfToken, el } from "./dom.js";

const meter = document.getElementById("budget-meter");
const estimateNode = document.getElementById("cost-estimate");
const effortSelect = document.getElementById("effort-select");
const composerError = document.getElementById("composer-error");
let latest = null;

function money(value, digits = 2) {
  if (value === null || value === undefined) return "no limit";
  return `$${Number(value).toFixed(digits)}`;
}

function line(label, status) {
  const item = el("p", { class: "budget-line" });
  if (status.limit === null) {
    item.textContent = `${label}: ${money(status.spent, 4)} spent this month, no limit`;
    return item;
  }
  const spent = Number(status.spent);
  const reserved = Number(status.reserved);
  const limit = Number(status.limit);
  const bar = document.createElement("meter");
  bar.min = 0;
  bar.max = limit;
  bar.value = Math.min(spent + reserved, limit);
  bar.low = limit * 0.8;
  bar.high = limit * 0.95;
  bar.optimum = 0;
  bar.setAttribute("aria-label", `${label} used`);
  item.append(
    `${label}: ${money(status.spent, 4)} spent, ${money(status.reserved, 4)} reserved, `
      + `${money(status.remaining, 4)} left of ${money(status.limit)} · resets ${status.resets_on} `,
    bar,
  );
  return item;
}

function renderEstimate() {
  if (!estimateNode || !latest || !effortSelect) return;
  const estimate = (latest.estimates || {})[effortSelect.value];
  if (!estimate) {
    estimateNode.textContent = "";
    return;
  }
  const basis = estimate.basis === "history"
    ? `from your organization's last ${estimate.samples} turns at this effort`
    : "a default range until there is more history";
  estimateNode.textContent = `This turn: about ${money(estimate.low, 4)}–${money(estimate.high, 4)} (${basis}).`;
}

function render(data) {
  latest = data;
  if (meter) {
    meter.replaceChildren(
      line("Your budget", data.budget.member),
      line("Organization", data.budget.org),
      ...(data.budget.groups || []).map((group) => line(`Group ${group.name}`, group)),
    );
    meter.hidden = false;
  }
  renderEstimate();
}

async function refresh() {
  const conversation = new URL(window.location.href).pathname.match(/^\/c\/(\d+)\//);
  const query = conversation ? `?conversation=${conversation[1]}` : "";
  try {
    const response = await fetch(`/budget/${query}`, { headers: { Accept: "application/json" } });
    if (response.ok) render(await response.json());
  } catch (error) {
    // The meter is informative only; the server enforces budgets regardless.
  }
}

// A budget request raises only the member's own budget (billing/requests.py), so it helps
// only when that budget is below what a turn at the selected effort reserves: its worst
// case (the server refuses a turn whose worst case does not fit). After a refusal by the
// org's or a group's budget, a member whose own budget still covers that is offered nothing.
function ownBudgetRefused() {
  const member = latest && latest.budget && latest.budget.member;
  if (!member || member.limit === null || member.remaining === null) return false;
  const remaining = Number(member.remaining);
  if (remaining <= 0) return true;
  const estimate = effortSelect ? (latest.estimates || {})[effortSelect.value] : null;
  if (!estimate) return false;
  return remaining < Number(estimate.worst);
}

function offerRequestMore() {
  if (!composerError || composerError.querySelector(".request-more")) return;
  const note = el("input", { name: "note", maxlength: 2000 });
  const button = el("button", { type: "submit", text: "Request more" });
  const status = el("span", { role: "status" });
  const form = el(
    "form",
    { class: "request-more" },
    el("label", { text: "Note to your admins" }, " ", note),
    " ",
    button,
    " ",
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const csrf = csrfToken();
    const body = new URLSearchParams({ note: note.value });
    if (csrf) body.set("csrfmiddlewaretoken", csrf);
    const response = await fetch("/org/budget-request/", {
      method: "POST",
      body,
      headers: { Accept: "application/json", "X-CSRFToken": csrf },
    });
    const data = await response.json().catch(() => ({}));
    status.textContent = response.ok
      ? "Sent. Your admins have been notified."
      : data.error || "Could not send the request.";
    button.disabled = response.ok;
  });
  composerError.append(form);
}

document.addEventListener("chat:answer-finished", refresh);
document.addEventListener("chat:composer-error", async (event) => {
  if (!event.detail || event.detail.code !== "quota_exceeded") return;
  await refresh();
  // Another error, or a send, may have replaced the refusal meanwhile.
  if (composerError && composerError.dataset.code === "quota_exceeded" && ownBudgetRefused()) {
    offerRequestMore();
  }
});
if (effortSelect) effortSelect.addEventListener("change", renderEstimate);
refresh();
