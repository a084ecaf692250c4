
"use strict";
// Tally's admin console. Everything here goes through the public API with the admin's own
// access token: the page hides what the admin's permissions do not allow, and the API refuses
// it anyway. Tokens live in this page's memory only (never in storage), so closing the tab
// logs out. DOM nodes are built with createElement and textContent, never from HTML text, so
// nothing the API answers can become markup.

// Rows asked per page: a screenful; the API's bound is 200.
const PAGE_LIMIT = 50;
// Accounts of one user shown at once: API.md caps a user at 64 accounts, one page of 200 covers them.
const USER_ACCOUNTS_LIMIT = 200;
// The queue refreshes itself this often while it is shown (and after every decision): new
// pending transfers appear without a click, and the page's own load stays negligible.
const QUEUE_REFRESH_MS = 30000;
// A step-up token is used only while it has at least this long left: a request in flight
// must not arrive with a token that expired on the way.
const STEP_UP_MARGIN_MS = 15000;
// Audit details are cut to this many characters in the table (the full text is its title).
const DETAILS_CHARS_MAX = 300;

// Which section needs which permission. A section the admin may not read is not offered.
const VIEWS = [
  { name: "queue", needs: "transfers:read", load: () => loadQueue(false) },
  { name: "aml", needs: "aml:read", load: () => loadFlags(false) },
  { name: "users", needs: "users:read", load: () => loadUsers(false) },
  { name: "audit", needs: "audit:read", load: () => loadAudit(false) },
];

const PENDING_REASONS = { manual_execution: "manual execution", aml_review: "AML review" };

const session = {
  access: null,
  refresh: null,
  refreshing: null,
  me: null,
  permissions: new Set(),
  // operation type → { token, expires } (ms since the epoch, less the margin)
  stepUps: new Map(),
  mfaSessionId: null,
};
let currentView = null;
const cursors = { queue: null, aml: null, users: null, audit: null };
// The filter each listing shown was loaded with: "Load more" goes on with it, not with
// whatever the filter fields were edited to since (their next page appended to this
// listing would be neither).
const shownFilters = { aml: null, users: null, audit: null };
// Each load of a list takes the next generation; an answer is shown only if no later load
// started meanwhile (a slow unfiltered page must not overwrite a filtered one).
const generations = { queue: 0, aml: 0, users: 0, audit: 0 };
let selectedTransfer = null;
let selectedUser = null;

function $(id) {
  return document.getElementById(id);
}

function can(action) {
  return session.permissions.has(action);
}

function totpOn() {
  return Boolean(session.me && session.me.mfa && session.me.mfa.totp_enabled);
}

// An element with attributes (`class`, `text`, `on<event>` handlers, anything else as an
// attribute) and children (nodes or text).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function badge(value) {
  return el("span", { class: "badge", "data-value": value }, value === null || value === undefined ? "—" : value);
}

function fields(pairs) {
  return el("dl", { class: "fields" }, pairs.filter((pair) => pair).map(([name, value, attrs]) =>
    [el("dt", {}, name), el("dd", attrs || {}, value === null || value === undefined || value === "" ? "—" : value)]));
}

// A path from fixed parts and ids: ids (every other part) are URL-encoded.
function path(...parts) {
  return parts.map((part, index) => (index % 2 ? encodeURIComponent(part) : part)).join("");
}

function query(params) {
  const pairs = Object.entries(params).filter(([, value]) => value !== null && value !== undefined && value !== "");
  return pairs.length ? "?" + pairs.map(([key, value]) => key + "=" + encodeURIComponent(value)).join("&") : "";
}

function short(id) {
  return id ? el("span", { class: "id", title: id }, id.slice(0, 8) + "…") : "—";
}

function age(iso) {
  const ms = Date.now() - Date.parse(iso);
  if (!(ms >= 0)) return "just now";
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return seconds + " s";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes + " min";
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return hours + " h";
  return Math.floor(hours / 24) + " d";
}

// Money stays the API's decimal string: never parsed into a float.
function money(amount, currency) {
  return amount + " " + currency;
}

// A random UUID (v4) for Idempotency-Key. crypto.randomUUID exists only in secure contexts;
// getRandomValues exists everywhere.
function uuid() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
}

// ---- API ------------------------------------------------------------------------------------

// An answer that was not 2xx, with the API's problem document (RFC 9457).
class ApiProblem extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || "HTTP " + status);
    this.status = status;
    this.problem = problem;
    this.code = problem.code || "";
  }
}

// The admin closed a dialog instead of answering it.
class Cancelled extends Error {}

async function readProblem(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!body || typeof body !== "object") {
    body = { title: response.statusText || "error", detail: "the server answered " + response.status + " without a problem document" };
  }
  return new ApiProblem(response.status, body);
}

// What a failure says to a person: the status and code, the API's detail, its field errors
// and the request id to quote to an operator.
function describe(error) {
  if (error instanceof ApiProblem) {
    const problem = error.problem;
    let text = error.status === 403 && error.code === "FORBIDDEN"
      ? "Not allowed (403 FORBIDDEN)"
      : error.status + " " + (problem.code || problem.title || "");
    text += ": " + (problem.detail || problem.title || "no detail");
    if (Array.isArray(problem.errors) && problem.errors.length) {
      text += " (" + problem.errors.map((item) => item.field + ": " + item.message).join("; ") + ")";
    }
    if (problem.request_id) text += " [request " + problem.request_id + "]";
    return text;
  }
  return "The request did not complete: " + (error && error.message ? error.message : String(error)) + " (is the server reachable?)";
}

function problemNode(error) {
  const attrs = { class: "message problem", role: "alert" };
  if (error instanceof ApiProblem) {
    attrs["data-status"] = error.status;
    attrs["data-code"] = error.code;
  }
  return el("div", attrs, describe(error));
}

async function refreshTokens() {
  if (!session.refresh) return false;
  if (!session.refreshing) {
    session.refreshing = (async () => {
      try {
        const response = await fetch("/v1/auth/refresh", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ refresh_token: session.refresh }),
          cache: "no-store",
          credentials: "omit",
        });
        if (!response.ok) return false;
        const body = await response.json();
        session.access = body.access_token;
        session.refresh = body.refresh_token;
        return true;
      } catch (_) {
        return false;
      } finally {
        session.refreshing = null;
      }
    })();
  }
  return session.refreshing;
}

function liveStepUp(operation) {
  const held = session.stepUps.get(operation);
  return held && held.expires > Date.now() ? held.token : null;
}

// Calls the API as the logged-in admin. Options: `body` (JSON), `idempotencyKey`, `stepUp`
// (the operation type: its step-up token is sent, and a 403 STEP_UP_REQUIRED asks for a code
// and retries once). An expired access token is refreshed once; any other 401 ends the
// session. Answers the JSON body (null for 204); throws ApiProblem otherwise.
async function api(method, url, options) {
  options = options || {};
  for (let attempt = 0; ; attempt += 1) {
    const used = session.access;
    const headers = { Authorization: "Bearer " + used };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
    if (options.stepUp && liveStepUp(options.stepUp)) headers["X-Step-Up-Token"] = liveStepUp(options.stepUp);
    const response = await fetch(url, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: "no-store",
      credentials: "omit",
    });
    if (response.ok) {
      if (response.status === 204) return null;
      const text = await response.text();
      return text ? JSON.parse(text) : null;
    }
    const problem = await readProblem(response);
    if (attempt === 0 && problem.status === 401 && problem.code === "TOKEN_EXPIRED"
        && (session.access !== used || await refreshTokens())) {
      continue;
    }
    // A wrong one-time code is 401 INVALID_CREDENTIALS and is the dialog's business; any
    // other 401 means this session is over.
    if (problem.status === 401 && problem.code !== "INVALID_CREDENTIALS") {
      loggedOut("Your session has ended (" + problem.code + "): log in again.", "login");
    }
    if (attempt === 0 && problem.status === 403 && problem.code === "STEP_UP_REQUIRED" && options.stepUp) {
      session.stepUps.delete(options.stepUp);
      await stepUp(options.stepUp);
      continue;
    }
    throw problem;
  }
}

// A step-up token for `operation`: the live one, or a new one after the admin types a code
// from their authenticator (asked again after a wrong code, until they cancel).
async function stepUp(operation) {
  const live = liveStepUp(operation);
  if (live) return live;
  const began = await api("POST", "/v1/auth/step-up", { body: { operation_type: operation } });
  let message = "";
  for (;;) {
    const values = await ask({
      purpose: "step-up",
      title: "Confirm with your authenticator",
      summary: [el("p", {}, "Your account has TOTP on: " + operation + " needs a code from your authenticator app.")],
      fields: [{ name: "code", label: "6-digit code", required: true, inputmode: "numeric", autocomplete: "one-time-code" }],
      confirm: "Verify",
      message,
    });
    if (!values) throw new Cancelled("step-up cancelled");
    try {
      const verified = await api("POST", "/v1/auth/step-up/verify", {
        body: { step_up_session_id: began.step_up_session_id, code: values.code.trim() },
      });
      session.stepUps.set(operation, {
        token: verified.step_up_token,
        expires: Date.now() + verified.expires_in * 1000 - STEP_UP_MARGIN_MS,
      });
      return verified.step_up_token;
    } catch (error) {
      if (error instanceof ApiProblem && (error.code === "INVALID_CREDENTIALS" || error.code === "VALIDATION_ERROR")) {
        message = describe(error);
        continue;
      }
      throw error;
    }
  }
}

// ---- Feedback -------------------------------------------------------------------------------

function banner(kind, text, error) {
  const node = $("banner");
  node.dataset.kind = kind;
  if (error instanceof ApiProblem) {
    node.dataset.status = error.status;
    node.dataset.code = error.code;
  } else {
    delete node.dataset.status;
    delete node.dataset.code;
  }
  $("banner-text").textContent = text;
  node.classList.remove("hidden");
}

function showError(error) {
  if (error instanceof Cancelled) return;
  banner("error", describe(error), error);
}

function info(text) {
  banner("info", text, null);
}

function setStatus(state, text) {
  const node = $("status");
  node.dataset.state = state;
  node.textContent = text;
}

// ---- Dialog ---------------------------------------------------------------------------------

let dialogAnswer = null;

// Opens the dialog; answers the fields' values when confirmed, null when cancelled.
// spec: {purpose, title, summary: [nodes], fields: [{name, label, kind: input|textarea|select,
// options: [[value, label]], required, ...attributes}], confirm, message}.
function ask(spec) {
  const dialog = $("dialog");
  dialog.dataset.purpose = spec.purpose;
  $("dialog-title").textContent = spec.title;
  $("dialog-summary").replaceChildren(...(spec.summary || []));
  const inputs = (spec.fields || []).map((field) => {
    const attrs = { id: "dialog-" + field.name, name: field.name, required: field.required || false };
    for (const key of ["inputmode", "autocomplete", "placeholder", "pattern"]) {
      if (field[key]) attrs[key] = field[key];
    }
    let input;
    if (field.kind === "select") {
      input = el("select", attrs, field.options.map(([value, label]) => el("option", { value }, label)));
    } else if (field.kind === "textarea") {
      input = el("textarea", attrs);
    } else {
      input = el("input", attrs);
    }
    if (field.value !== undefined) input.value = field.value;
    return el("label", {}, field.label, input);
  });
  $("dialog-fields").replaceChildren(...inputs);
  $("dialog-message").textContent = spec.message || "";
  $("dialog-confirm").textContent = spec.confirm || "OK";
  if (!dialog.open) dialog.showModal();
  const first = dialog.querySelector("#dialog-fields input, #dialog-fields textarea, #dialog-fields select");
  (first || $("dialog-confirm")).focus();
  return new Promise((resolve) => {
    dialogAnswer = resolve;
  });
}

function answerDialog(values) {
  const resolve = dialogAnswer;
  dialogAnswer = null;
  if ($("dialog").open) $("dialog").close();
  if (resolve) resolve(values);
}

function dialogSubmitted(event) {
  event.preventDefault();
  const values = {};
  for (const input of $("dialog-fields").querySelectorAll("input, textarea, select")) {
    if (input.required && !input.value.trim()) {
      $("dialog-message").textContent = "Fill in " + input.name + ".";
      input.focus();
      return;
    }
    values[input.name] = input.value;
  }
  answerDialog(values);
}

// ---- Pending queue and transfer detail -------------------------------------------------------

// Every QUEUE_REFRESH_MS while the queue is shown and no dialog is open.
function refreshQueue() {
  if (currentView === "queue" && session.access && !$("dialog").open) loadQueue(false, true);
}

// `more`: the next page below the rows shown. `keepShown` (the periodic refresh): the queue
// from its start again, as many rows as are shown, so that rows "Load more" added stay.
async function loadQueue(more, keepShown) {
  if (!session.access) return;
  const generation = ++generations.queue;
  const body = $("queue").tBodies[0];
  const wanted = keepShown ? body.rows.length : 0;
  const pageAt = (cursor) =>
    api("GET", "/v1/admin/transfers" + query({ status: "pending", order: "oldest_first", limit: PAGE_LIMIT, cursor }));
  try {
    let [page, count] = await Promise.all([
      pageAt(more ? cursors.queue : null),
      more ? null : api("GET", "/v1/admin/transfers/count" + query({ status: "pending" })),
    ]);
    const items = page.items.slice();
    while (items.length < wanted && page.next_cursor) {
      if (generation !== generations.queue) return;
      page = await pageAt(page.next_cursor);
      items.push(...page.items);
    }
    if (generation !== generations.queue) return;
    if (!more) body.replaceChildren();
    for (const transfer of items) body.append(queueRow(transfer));
    if (count) {
      $("queue-count").dataset.count = count.count;
      $("queue-count").textContent = count.count + " pending";
    }
    cursors.queue = page.next_cursor;
    $("queue-more").classList.toggle("hidden", !page.next_cursor);
    $("queue-empty").classList.toggle("hidden", body.rows.length > 0);
    $("queue-updated").textContent = "updated " + new Date().toLocaleTimeString();
    $("view-queue").dataset.loaded = "true";
  } catch (error) {
    showError(error);
  }
}

function destinationOf(transfer) {
  if (transfer.beneficiary) return transfer.beneficiary.name + " · " + transfer.beneficiary.iban;
  return short(transfer.destination_account_id);
}

function queueRow(transfer) {
  const row = el("tr", {
    class: "clickable",
    "data-transfer-id": transfer.id,
    "aria-selected": transfer.id === selectedTransfer ? "true" : null,
    onclick: () => openTransfer(transfer.id),
  },
  el("td", { title: transfer.created_at }, age(transfer.created_at)),
  el("td", { class: "amount" }, money(transfer.amount, transfer.currency),
    transfer.fee && !/^0(\.0*)?$/.test(transfer.fee) ? el("span", { class: "dim" }, " + fee " + transfer.fee) : null),
  el("td", {}, short(transfer.source_account_id)),
  el("td", {}, destinationOf(transfer)),
  el("td", { class: "reason" }, PENDING_REASONS[transfer.pending_reason] || transfer.pending_reason || "—"),
  el("td", {}, transfer.type),
  el("td", {}, transfer.reference || "—"));
  return row;
}

function markSelected(table, attribute, id) {
  for (const row of $(table).tBodies[0].rows) {
    if (row.getAttribute(attribute) === id) row.setAttribute("aria-selected", "true");
    else row.removeAttribute("aria-selected");
  }
}

// Shows the detail panel `box` loading `noun` `id` and reads `url`. Answers the resource, or
// null once the problem is shown in the panel (not when `isCurrent` says another detail was
// opened meanwhile: that one owns the panel now).
async function loadDetail(box, noun, id, url, isCurrent) {
  box.classList.remove("hidden");
  box.dataset.loaded = "false";
  box.replaceChildren(el("div", { class: "dim" }, "Loading " + noun + " " + id + "…"));
  try {
    return await api("GET", url);
  } catch (error) {
    if (isCurrent()) {
      box.replaceChildren(el("h3", {}, noun + " " + id), problemNode(error));
      box.dataset.loaded = "true";
    }
    return null;
  }
}

async function openTransfer(id) {
  if (!session.access) return;
  if (currentView !== "queue") show("queue");
  selectedTransfer = id;
  markSelected("queue", "data-transfer-id", id);
  const box = $("transfer");
  box.dataset.transferId = id;
  const transfer = await loadDetail(box, "transfer", id, path("/v1/admin/transfers/", id), () => selectedTransfer === id);
  if (!transfer) return;
  const [source, destination, flags] = await Promise.all([
    accountCard("Source account", transfer.source_account_id, transfer.id),
    accountCard(transfer.type === "external" ? "Destination: settlement account (pays out)" : "Destination account",
      transfer.destination_account_id, transfer.id),
    transferFlags(transfer),
  ]);
  if (selectedTransfer !== id) return;
  box.dataset.status = transfer.status;
  box.replaceChildren(
    el("h3", {}, "Transfer ", el("span", { class: "id" }, transfer.id), " ", badge(transfer.status)),
    fields([
      ["type", transfer.type],
      ["amount", money(transfer.amount, transfer.currency), { class: "amount", id: "transfer-amount" }],
      ["fee", money(transfer.fee, transfer.currency), { class: "amount" }],
      ["total debited", money(transfer.total_debited, transfer.currency), { class: "amount" }],
      transfer.fx_rate ? ["converted", money(transfer.destination_amount, transfer.destination_currency) + " at " + transfer.fx_rate] : null,
      ["pending reason", PENDING_REASONS[transfer.pending_reason] || transfer.pending_reason],
      transfer.pending_expires_at ? [transfer.status === "pending" ? "expires" : "expiry deadline", transfer.pending_expires_at, { id: "transfer-expires" }] : null,
      transfer.failure_reason ? ["failure reason", transfer.failure_reason] : null,
      transfer.beneficiary ? ["beneficiary", transfer.beneficiary.name + " · " + transfer.beneficiary.iban, { id: "transfer-beneficiary" }] : null,
      ["reference", transfer.reference],
      ["description", transfer.description],
      ["initiated by", transfer.user_id ? userLink(transfer.user_id) : "system"],
      ["created", transfer.created_at + " (" + age(transfer.created_at) + " ago)"],
      transfer.completed_at ? ["completed", transfer.completed_at] : null,
      ["saga step", transfer.saga_step],
    ]),
    decisionButtons(transfer),
    el("div", { class: "cards" }, source, destination),
    flags,
  );
  box.dataset.loaded = "true";
}

function userLink(userId) {
  if (!can("users:read")) return el("span", { class: "id" }, userId);
  return el("button", { type: "button", class: "link", onclick: () => { show("users"); openUser(userId); } }, userId);
}

function decisionButtons(transfer) {
  if (transfer.status !== "pending") {
    return el("p", { class: "dim", id: "decision-none" }, "Decided: nothing waits on this transfer.");
  }
  const buttons = [];
  if (can("transfers:execute")) {
    buttons.push(el("button", { type: "button", class: "primary", id: "action-execute", onclick: () => decide("execute", transfer) },
      "Execute" + (totpOn() ? " (asks for a code)" : "")));
  }
  if (can("transfers:reject")) {
    buttons.push(el("button", { type: "button", class: "danger", id: "action-reject", onclick: () => decide("reject", transfer) }, "Reject"));
  }
  if (can("transfers:cancel")) {
    buttons.push(el("button", { type: "button", id: "action-cancel", onclick: () => decide("cancel", transfer) }, "Cancel"));
  }
  if (!buttons.length) {
    return el("p", { class: "dim", id: "decision-none" }, "Your permissions allow no decision on this transfer (transfers:execute, transfers:reject, transfers:cancel).");
  }
  return el("div", { class: "actions", id: "decision" }, buttons);
}

const DECISIONS = {
  execute: { title: "Execute this transfer", confirm: "Execute", done: "executed: the transfer completes" },
  reject: { title: "Reject this transfer", confirm: "Reject", done: "rejected: its hold is released" },
  cancel: { title: "Cancel this transfer", confirm: "Cancel the transfer", done: "cancelled: its hold is released" },
};

async function decide(kind, transfer) {
  const decision = DECISIONS[kind];
  const summary = [fields([
    ["transfer", transfer.id],
    ["amount", money(transfer.amount, transfer.currency) + " (+ fee " + transfer.fee + ")"],
    ["to", transfer.beneficiary ? transfer.beneficiary.name + " · " + transfer.beneficiary.iban : transfer.destination_account_id],
    ["reason pending", PENDING_REASONS[transfer.pending_reason] || transfer.pending_reason],
  ])];
  const values = await ask({
    purpose: kind,
    title: decision.title,
    summary,
    fields: kind === "execute" ? [] : [{ name: "reason", label: "Reason (kept in the audit log)", kind: "textarea", required: true }],
    confirm: decision.confirm,
  });
  if (!values) return;
  const buttons = document.querySelectorAll("#decision button");
  buttons.forEach((button) => { button.disabled = true; });
  try {
    if (kind === "execute") {
      // With TOTP on, the API wants a step-up token for this operation: ask first rather
      // than after a refusal.
      if (totpOn()) await stepUp("transfers.execute");
      await api("POST", path("/v1/admin/transfers/", transfer.id, "/execute"), { stepUp: "transfers.execute" });
    } else {
      await api("POST", path("/v1/admin/transfers/", transfer.id, "/" + kind), { body: { reason: values.reason.trim() } });
    }
    info("Transfer " + transfer.id + " " + decision.done + ".");
  } catch (error) {
    showError(error);
  }
  buttons.forEach((button) => { button.disabled = false; });
  await Promise.all([loadQueue(false, true), openTransfer(transfer.id)]);
}

async function accountCard(title, accountId, transferId) {
  const card = el("div", { class: "card account", "data-account-id": accountId });
  card.append(el("h3", {}, title));
  if (!can("accounts:read")) {
    card.append(fields([["id", accountId]]), el("p", { class: "dim" }, "Balances need the accounts:read permission."));
    return card;
  }
  try {
    const account = await api("GET", path("/v1/admin/accounts/", accountId));
    card.dataset.status = account.status;
    card.append(
      fields([
        ["id", el("span", { class: "id" }, account.id)],
        ["owner", account.user_id ? userLink(account.user_id) : "system (" + account.kind + ")"],
        ["status", badge(account.status)],
        ["balance", money(account.balance, account.currency), { class: "amount", "data-field": "balance" }],
        ["held", money(account.held, account.currency), { class: "amount", "data-field": "held" }],
        ["available", money(account.available_balance, account.currency), { class: "amount", "data-field": "available" }],
        ["credit limit", money(account.credit_limit, account.currency), { class: "amount" }],
      ]),
      el("div", { class: "dim" }, "Holds (" + account.holds.length + ")"),
      account.holds.length
        ? el("ul", { class: "plain holds" }, account.holds.map((hold) => el("li", {
          class: hold.transfer_id === transferId ? "this-transfer" : null,
          "data-transfer-id": hold.transfer_id,
        }, money(hold.amount, account.currency) + " for ", short(hold.transfer_id), hold.transfer_id === transferId ? " (this transfer)" : "")))
        : el("p", { class: "dim" }, "none"),
    );
  } catch (error) {
    card.append(fields([["id", accountId]]), problemNode(error));
  }
  return card;
}

async function transferFlags(transfer) {
  const box = el("div", { id: "transfer-flags" }, el("h3", {}, "AML flags"));
  if (!can("aml:read")) {
    box.append(el("p", { class: "dim" }, "AML flags need the aml:read permission."));
    return box;
  }
  try {
    const page = await api("GET", "/v1/admin/aml/flags" + query({ transfer_id: transfer.id, limit: PAGE_LIMIT }));
    if (!page.items.length) {
      box.append(el("p", { class: "dim" }, "No AML rule flagged this transfer."));
    } else {
      box.append(flagTable(page.items, () => openTransfer(transfer.id), false));
    }
  } catch (error) {
    box.append(problemNode(error));
  }
  return box;
}

// ---- AML flags ------------------------------------------------------------------------------

function flagTable(flags, after, withTransfer) {
  return el("table", { class: "flags" },
    el("thead", {}, el("tr", {}, ["raised", "rule", "action", "amount", withTransfer ? "transfer" : null, withTransfer ? "account" : null, "status", "notes", ""]
      .filter((name) => name !== null).map((name) => el("th", {}, name)))),
    el("tbody", {}, flags.map((flag) => flagRow(flag, after, withTransfer))));
}

function flagRow(flag, after, withTransfer) {
  return el("tr", { "data-flag-id": flag.id, "data-status": flag.status },
    el("td", { title: flag.created_at }, age(flag.created_at)),
    el("td", {}, flag.rule_name),
    el("td", {}, badge(flag.action)),
    el("td", { class: "amount" }, money(flag.amount, flag.currency)),
    withTransfer ? el("td", {}, can("transfers:read")
      ? el("button", { type: "button", class: "link", onclick: () => openTransfer(flag.transfer_id) }, flag.transfer_id.slice(0, 8) + "…")
      : el("span", { title: flag.transfer_id }, flag.transfer_id.slice(0, 8) + "…")) : null,
    withTransfer ? el("td", {}, short(flag.account_id)) : null,
    el("td", {}, badge(flag.status)),
    el("td", {}, flag.notes || ""),
    el("td", {}, flag.status === "open" && can("aml:write")
      ? el("button", { type: "button", class: "resolve", onclick: () => resolveFlag(flag, after) }, "Resolve")
      : ""));
}

async function loadFlags(more) {
  if (!session.access) return;
  const generation = ++generations.aml;
  try {
    const status = more && shownFilters.aml ? shownFilters.aml.status : $("aml-status").value;
    shownFilters.aml = { status };
    const [page, count] = await Promise.all([
      api("GET", "/v1/admin/aml/flags" + query({ status, limit: PAGE_LIMIT, cursor: more ? cursors.aml : null })),
      more ? null : api("GET", "/v1/admin/aml/flags/count" + query({ status })),
    ]);
    if (generation !== generations.aml) return;
    const body = $("aml-flags").tBodies[0];
    if (!more) body.replaceChildren();
    for (const flag of page.items) body.append(flagRow(flag, () => loadFlags(false), true));
    if (count) {
      $("aml-count").dataset.count = count.count;
      $("aml-count").textContent = count.count + (status ? " " + status.replace("_", " ") : " in all");
    }
    cursors.aml = page.next_cursor;
    $("aml-more").classList.toggle("hidden", !page.next_cursor);
    $("aml-empty").classList.toggle("hidden", body.rows.length > 0);
    $("view-aml").dataset.loaded = "true";
  } catch (error) {
    showError(error);
  }
}

async function resolveFlag(flag, after) {
  const values = await ask({
    purpose: "resolve",
    title: "Resolve AML flag",
    summary: [fields([["rule", flag.rule_name], ["amount", money(flag.amount, flag.currency)], ["transfer", flag.transfer_id]])],
    fields: [
      { name: "action", label: "Decision", kind: "select", options: [["clear", "Clear: the activity is explained"], ["mark_false_positive", "False positive: the rule misfired"]] },
      { name: "notes", label: "Note (kept with the flag)", kind: "textarea", required: true },
    ],
    confirm: "Resolve",
  });
  if (!values) return;
  try {
    await api("POST", path("/v1/admin/aml/flags/", flag.id, "/resolve"), { body: { action: values.action, notes: values.notes.trim() } });
    info("Flag " + flag.id + " resolved.");
  } catch (error) {
    showError(error);
  }
  await after();
}

// ---- Users and accounts ---------------------------------------------------------------------

async function loadUsers(more) {
  if (!session.access) return;
  const generation = ++generations.users;
  try {
    const filter = more && shownFilters.users
      ? shownFilters.users
      : { search: $("users-search").value.trim(), status: $("users-status").value };
    shownFilters.users = filter;
    const [page, count] = await Promise.all([
      api("GET", "/v1/admin/users" + query({ ...filter, limit: PAGE_LIMIT, cursor: more ? cursors.users : null })),
      more ? null : api("GET", "/v1/admin/users/count" + query(filter)),
    ]);
    if (generation !== generations.users) return;
    const body = $("users").tBodies[0];
    if (!more) body.replaceChildren();
    for (const user of page.items) {
      body.append(el("tr", { class: "clickable", "data-user-id": user.user_id, onclick: () => openUser(user.user_id) },
        el("td", {}, user.email),
        el("td", {}, user.first_name + " " + user.last_name),
        el("td", {}, badge(user.status)),
        el("td", {}, user.verification_level),
        el("td", {}, user.mfa && user.mfa.totp_enabled ? "on" : "off"),
        el("td", {}, String(user.sessions_active)),
        el("td", {}, user.roles.map((role) => role.name).join(", ") || "—")));
    }
    if (count) {
      $("users-count").dataset.count = count.count;
      $("users-count").textContent = count.count + " found";
    }
    cursors.users = page.next_cursor;
    $("users-more").classList.toggle("hidden", !page.next_cursor);
    $("users-empty").classList.toggle("hidden", body.rows.length > 0);
    $("view-users").dataset.loaded = "true";
  } catch (error) {
    showError(error);
  }
}

async function openUser(id) {
  if (!session.access) return;
  selectedUser = id;
  markSelected("users", "data-user-id", id);
  const box = $("user");
  box.dataset.userId = id;
  const user = await loadDetail(box, "user", id, path("/v1/admin/users/", id), () => selectedUser === id);
  if (!user) return;
  const [sessions, accounts] = await Promise.all([userSessions(id), userAccounts(id)]);
  if (selectedUser !== id) return;
  const actions = [];
  if (can("users:block")) {
    const blocked = user.status === "blocked";
    actions.push(el("button", { type: "button", class: blocked ? "" : "danger", id: "user-status",
      onclick: () => setUserStatus(user, blocked ? "active" : "blocked") }, blocked ? "Unblock user" : "Block user"));
    actions.push(el("button", { type: "button", id: "user-end-sessions", onclick: () => endSessions(user) }, "End all sessions"));
  }
  if (can("users:verify")) {
    actions.push(el("button", { type: "button", id: "user-verification", onclick: () => setVerification(user) }, "Set verification level"));
  }
  box.dataset.status = user.status;
  box.replaceChildren(
    el("h3", {}, user.first_name + " " + user.last_name + " ", badge(user.status)),
    fields([
      ["user id", el("span", { class: "id" }, user.user_id)],
      ["email", user.email + (user.email_verified ? " (verified)" : " (not verified)")],
      ["phone", user.phone],
      ["verification level", user.verification_level, { id: "user-level" }],
      ["TOTP", user.mfa && user.mfa.totp_enabled ? "on" : "off"],
      ["sessions active", String(user.sessions_active)],
      ["roles", user.roles.map((role) => role.name).join(", ")],
      ["permissions", user.permissions.join(", ")],
      ["created", user.created_at],
    ]),
    actions.length ? el("div", { class: "actions" }, actions) : null,
    sessions,
    accounts,
  );
  box.dataset.loaded = "true";
}

async function userSessions(id) {
  const box = el("div", { id: "user-sessions" }, el("h3", {}, "Sessions"));
  try {
    const sessions = await api("GET", path("/v1/admin/users/", id, "/sessions"));
    box.append(sessions.length
      ? el("table", {}, el("thead", {}, el("tr", {}, ["started", "last active", "ip", "user agent"].map((name) => el("th", {}, name)))),
        el("tbody", {}, sessions.map((item) => el("tr", { "data-session-id": item.session_id },
          el("td", {}, item.created_at), el("td", {}, age(item.last_activity_at) + " ago"),
          el("td", {}, item.client_ip || "—"), el("td", {}, item.user_agent || "—")))))
      : el("p", { class: "dim" }, "No live session."));
  } catch (error) {
    box.append(problemNode(error));
  }
  return box;
}

async function userAccounts(id) {
  const box = el("div", { id: "user-accounts" }, el("h3", {}, "Accounts"));
  if (!can("accounts:read")) {
    box.append(el("p", { class: "dim" }, "Accounts need the accounts:read permission."));
    return box;
  }
  try {
    const page = await api("GET", "/v1/admin/accounts" + query({ user_id: id, limit: USER_ACCOUNTS_LIMIT }));
    if (!page.items.length) {
      box.append(el("p", { class: "dim" }, "No account."));
      return box;
    }
    box.append(el("table", {},
      el("thead", {}, el("tr", {}, ["account", "currency", "status", "balance", "held", "available", "credit limit", ""].map((name) => el("th", {}, name)))),
      el("tbody", {}, page.items.map((account) => el("tr", { "data-account-id": account.id, "data-status": account.status },
        el("td", {}, short(account.id)),
        el("td", {}, account.currency),
        el("td", {}, badge(account.status)),
        el("td", { class: "amount", "data-field": "balance" }, account.balance),
        el("td", { class: "amount", "data-field": "held" }, account.held),
        el("td", { class: "amount", "data-field": "available" }, account.available_balance),
        el("td", { class: "amount" }, account.credit_limit),
        el("td", {}, accountActions(account)))))));
  } catch (error) {
    box.append(problemNode(error));
  }
  return box;
}

function accountActions(account) {
  const buttons = [];
  if (can("accounts:close") && account.status !== "closed") {
    const blocked = account.status === "blocked";
    buttons.push(el("button", { type: "button", class: "account-status " + (blocked ? "" : "danger"),
      onclick: () => setAccountStatus(account, blocked ? "unblock" : "block") }, blocked ? "Unblock" : "Block"));
  }
  if (can("transfers:adjust") && account.status !== "closed") {
    buttons.push(el("button", { type: "button", class: "adjust", onclick: () => adjust(account) }, "Adjust"));
  }
  return buttons;
}

async function setUserStatus(user, status) {
  const values = await ask({
    purpose: "user-status",
    title: status === "blocked" ? "Block " + user.email : "Unblock " + user.email,
    summary: [el("p", {}, status === "blocked" ? "Blocking ends every session of the user at once." : "The user may log in again; no session comes back.")],
    fields: [{ name: "reason", label: "Reason (kept in the audit log)", kind: "textarea", required: true }],
    confirm: status === "blocked" ? "Block" : "Unblock",
  });
  if (!values) return;
  try {
    await api("POST", path("/v1/admin/users/", user.user_id, "/status"), { body: { status, reason: values.reason.trim() } });
    info(user.email + " is " + status + ".");
  } catch (error) {
    showError(error);
  }
  await Promise.all([openUser(user.user_id), loadUsers(false)]);
}

async function endSessions(user) {
  const values = await ask({ purpose: "end-sessions", title: "End every session of " + user.email, summary: [el("p", {}, "Their tokens stop working at once.")], fields: [], confirm: "End sessions" });
  if (!values) return;
  try {
    const ended = await api("DELETE", path("/v1/admin/users/", user.user_id, "/sessions"));
    info(ended.ended + " session(s) of " + user.email + " ended.");
  } catch (error) {
    showError(error);
  }
  await openUser(user.user_id);
}

async function setVerification(user) {
  const values = await ask({
    purpose: "verification",
    title: "Verification level of " + user.email,
    fields: [
      { name: "level", label: "Level", kind: "select", value: user.verification_level,
        options: [["none", "none"], ["basic", "basic"], ["verified", "verified"], ["enhanced", "enhanced"]] },
      { name: "notes", label: "Notes", kind: "textarea" },
    ],
    confirm: "Set level",
  });
  if (!values) return;
  try {
    const body = { level: values.level };
    if (values.notes.trim()) body.notes = values.notes.trim();
    await api("POST", path("/v1/admin/users/", user.user_id, "/verification"), { body });
    info(user.email + " is now " + values.level + ".");
  } catch (error) {
    showError(error);
  }
  await openUser(user.user_id);
}

async function setAccountStatus(account, action) {
  const values = await ask({
    purpose: "account-status",
    title: (action === "block" ? "Block" : "Unblock") + " account " + account.id,
    summary: [el("p", {}, action === "block" ? "A blocked account refuses new holds and credits; pending transfers can still be decided." : "The account accepts holds and credits again.")],
    fields: [{ name: "reason", label: "Reason (kept in the audit log)", kind: "textarea", required: true }],
    confirm: action === "block" ? "Block" : "Unblock",
  });
  if (!values) return;
  try {
    await api("POST", path("/v1/admin/accounts/", account.id, "/status"), { body: { action, reason: values.reason.trim() } });
    info("Account " + account.id + " " + (action === "block" ? "blocked" : "unblocked") + ".");
  } catch (error) {
    showError(error);
  }
  if (selectedUser) await openUser(selectedUser);
}

async function adjust(account) {
  // One key per adjustment the admin confirms: a retry of the same request after a lost
  // answer moves the money once.
  const idempotencyKey = uuid();
  const values = await ask({
    purpose: "adjust",
    title: "Adjust account " + account.id,
    summary: [el("p", {}, "Moves money between this account and the " + account.currency + " settlement account. Balance now: " + money(account.balance, account.currency) + ".")],
    fields: [
      { name: "type", label: "Direction", kind: "select", options: [["admin_credit", "Credit the account (from settlement)"], ["admin_debit", "Debit the account (to settlement)"]] },
      { name: "amount", label: "Amount in " + account.currency, required: true, inputmode: "decimal", placeholder: "125.50" },
      { name: "purpose", label: "Purpose (kept with the transfer)", kind: "textarea", required: true },
      { name: "reference", label: "Reference (optional)" },
    ],
    confirm: "Adjust",
  });
  if (!values) return;
  const body = { type: values.type, account_id: account.id, amount: values.amount.trim(), purpose: values.purpose.trim() };
  if (values.reference.trim()) body.reference = values.reference.trim();
  try {
    if (totpOn()) await stepUp("adjustments.create");
    const transfer = await api("POST", "/v1/admin/adjustments", { body, idempotencyKey, stepUp: "adjustments.create" });
    info("Adjustment " + transfer.id + " " + transfer.status + ": " + money(transfer.amount, transfer.currency) + ".");
  } catch (error) {
    showError(error);
  }
  if (selectedUser) await openUser(selectedUser);
}

// ---- Audit ----------------------------------------------------------------------------------

// `YYYY-MM-DD` of the day after `day` (UTC), or "" for "".
function dayAfter(day) {
  if (!day) return "";
  const next = new Date(Date.parse(day + "T00:00:00Z") + 86400000);
  return Number.isNaN(next.getTime()) ? day : next.toISOString().slice(0, 10);
}

async function loadAudit(more) {
  if (!session.access) return;
  const generation = ++generations.audit;
  try {
    const filter = more && shownFilters.audit ? shownFilters.audit : {
      actor_id: $("audit-actor").value.trim(),
      action: $("audit-action").value.trim(),
      target_id: $("audit-target").value.trim(),
      from: $("audit-from").value,
      // The picker names a day to include; the API's `to` is where the period ends, so the
      // day after it ("from today to today" listed nothing).
      to: dayAfter($("audit-to").value),
    };
    shownFilters.audit = filter;
    const params = { ...filter, limit: PAGE_LIMIT, cursor: more ? cursors.audit : null };
    const page = await api("GET", "/v1/admin/audit" + query(params));
    if (generation !== generations.audit) return;
    const body = $("audit").tBodies[0];
    if (!more) body.replaceChildren();
    for (const entry of page.items) {
      const details = JSON.stringify(entry.details);
      body.append(el("tr", { "data-seq": entry.seq, "data-action": entry.action, "data-target-id": entry.target ? entry.target.id : null },
        el("td", {}, String(entry.seq)),
        el("td", { title: entry.at }, entry.at),
        el("td", {}, entry.actor.kind + (entry.actor.id ? " " : ""), entry.actor.id ? short(entry.actor.id) : null),
        el("td", {}, entry.action),
        el("td", {}, entry.target ? [entry.target.type + " ", short(entry.target.id)] : "—"),
        el("td", {}, entry.ip || "—"),
        el("td", { class: "details", title: details }, details.length > DETAILS_CHARS_MAX ? details.slice(0, DETAILS_CHARS_MAX) + "…" : details)));
    }
    cursors.audit = page.next_cursor;
    $("audit-more").classList.toggle("hidden", !page.next_cursor);
    $("audit-empty").classList.toggle("hidden", body.rows.length > 0);
    $("view-audit").dataset.loaded = "true";
  } catch (error) {
    showError(error);
  }
}

// ---- Navigation, login, start ---------------------------------------------------------------

function show(name) {
  currentView = name;
  // A confirmation belongs to the section it was given in; an error stays until dismissed.
  if ($("banner").dataset.kind === "info") $("banner").classList.add("hidden");
  for (const view of VIEWS) {
    $("view-" + view.name).classList.toggle("hidden", view.name !== name);
    $("tab-" + view.name).setAttribute("aria-selected", view.name === name ? "true" : "false");
  }
  const view = VIEWS.find((item) => item.name === name);
  if (view) view.load();
}

function loggedOut(message, state) {
  session.access = null;
  session.refresh = null;
  session.me = null;
  session.permissions = new Set();
  session.stepUps.clear();
  session.mfaSessionId = null;
  currentView = null;
  selectedTransfer = null;
  selectedUser = null;
  if ($("dialog").open) answerDialog(null);
  for (const view of VIEWS) {
    $("view-" + view.name).classList.add("hidden");
    $("tab-" + view.name).classList.add("hidden");
  }
  for (const id of ["transfer", "user", "tabs", "logout", "no-permissions"]) $(id).classList.add("hidden");
  $("whoami").textContent = "";
  $("code").classList.add("hidden");
  $("code").required = false;
  $("login").classList.remove("hidden");
  $("login-message").textContent = message || "";
  setStatus(state || "login", state === "denied" ? "not allowed" : "not logged in");
}

async function start(access, refresh) {
  session.access = access;
  session.refresh = refresh;
  let me;
  try {
    me = await api("GET", "/v1/users/me");
  } catch (error) {
    loggedOut(error instanceof ApiProblem && error.status === 401
      ? "The token is not valid (" + error.code + "): log in."
      : describe(error), error instanceof ApiProblem && error.status === 401 ? "login" : "error");
    return;
  }
  session.me = me;
  session.permissions = new Set(me.permissions || []);
  document.body.dataset.permissions = Array.from(session.permissions).join(" ");
  $("login").classList.add("hidden");
  $("login-message").textContent = "";
  $("whoami").textContent = me.email + (totpOn() ? " · TOTP on" : "");
  $("logout").classList.remove("hidden");
  const allowed = VIEWS.filter((view) => can(view.needs));
  for (const view of VIEWS) $("tab-" + view.name).classList.toggle("hidden", !can(view.needs));
  if (!allowed.length) {
    $("no-permissions").classList.remove("hidden");
    setStatus("denied", "no console permission");
    return;
  }
  $("tabs").classList.remove("hidden");
  setStatus("ready", "logged in");
  show(allowed[0].name);
}

async function login(event) {
  event.preventDefault();
  const message = $("login-message");
  message.textContent = "";
  $("login-submit").disabled = true;
  try {
    const mfa = session.mfaSessionId !== null;
    const response = mfa
      ? await fetch("/v1/auth/mfa/verify", { method: "POST", headers: { "Content-Type": "application/json" }, cache: "no-store", credentials: "omit",
        body: JSON.stringify({ mfa_session_id: session.mfaSessionId, code: $("code").value.trim() }) })
      : await fetch("/v1/auth/login", { method: "POST", headers: { "Content-Type": "application/json" }, cache: "no-store", credentials: "omit",
        body: JSON.stringify({ identifier: $("email").value.trim(), password: $("password").value }) });
    if (!response.ok) {
      const problem = await readProblem(response);
      // An MFA session that expired or was used up: start again from the password.
      if (mfa && problem.status === 401 && problem.code === "UNAUTHENTICATED") {
        session.mfaSessionId = null;
        $("code").classList.add("hidden");
        $("code").required = false;
      }
      message.textContent = describe(problem);
      return;
    }
    const body = await response.json();
    if (body.mfa_required) {
      session.mfaSessionId = body.mfa_session_id;
      $("code").classList.remove("hidden");
      $("code").required = true;
      $("code").value = "";
      $("code").focus();
      message.textContent = "Enter the code from your authenticator app.";
      return;
    }
    session.mfaSessionId = null;
    $("password").value = "";
    $("code").value = "";
    await start(body.access_token, body.refresh_token);
  } catch (error) {
    message.textContent = describe(error);
  } finally {
    $("login-submit").disabled = false;
  }
}

async function logout() {
  const token = session.access;
  loggedOut("Logged out.", "login");
  if (token) {
    try {
      await fetch("/v1/auth/logout", { method: "POST", headers: { Authorization: "Bearer " + token }, cache: "no-store", credentials: "omit" });
    } catch (_) {
      // The tokens are gone from this page either way.
    }
  }
}

function wire() {
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("banner-close").addEventListener("click", () => $("banner").classList.add("hidden"));
  for (const view of VIEWS) $("tab-" + view.name).addEventListener("click", () => show(view.name));
  $("queue-refresh").addEventListener("click", () => loadQueue(false));
  $("queue-more").addEventListener("click", () => loadQueue(true));
  $("aml-filter").addEventListener("submit", (event) => { event.preventDefault(); loadFlags(false); });
  $("aml-more").addEventListener("click", () => loadFlags(true));
  $("users-filter").addEventListener("submit", (event) => { event.preventDefault(); loadUsers(false); });
  $("users-more").addEventListener("click", () => loadUsers(true));
  $("audit-filter").addEventListener("submit", (event) => { event.preventDefault(); loadAudit(false); });
  $("audit-more").addEventListener("click", () => loadAudit(true));
  $("dialog-form").addEventListener("submit", dialogSubmitted);
  $("dialog-cancel").addEventListener("click", () => answerDialog(null));
  $("dialog").addEventListener("cancel", (event) => { event.preventDefault(); answerDialog(null); });
  setInterval(refreshQueue, QUEUE_REFRESH_MS);
  // A failure nobody caught still shows, rather than leaving the page silently stuck.
  window.addEventListener("unhandledrejection", (event) => showError(event.reason));
}

wire();
{
  // `#token=ACCESS_TOKEN` logs in without the form (automation); the token leaves the
  // address bar (and so the history) at once.
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    history.replaceState(null, "", location.pathname + location.search);
    start(token, null);
  }
}
