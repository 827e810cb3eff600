// "New session": working directory (inside the server's workspace root, chosen with a directory picker
// fed by GET /v1/workspace/dirs), model, and permission mode — the last stays disabled, with a note,
// until the server advertises that it accepts one (see approvals.js). The choices are remembered.

import { api } from "./api.js";
import { approvals } from "./approvals.js";
import { $, h } from "./util.js";

const REMEMBER = "turnstile.new-session";

export class NewSessionDialog {
  /** `create(options)` makes the session (the POST /v1/sessions body) and resolves to its id; the dialog
   *  then closes and `created(id)` shows it. */
  constructor(dialog, create, created) {
    this.dialog = dialog;
    this.create = create;
    this.created = created;
    this.server = null;
    this.form = dialog.querySelector("form");
    this.cwd = $("ns-cwd", dialog);
    this.model = $("ns-model", dialog);
    this.permission = $("ns-permission", dialog);
    this.permissionNote = $("ns-permission-note", dialog);
    this.error = $("ns-error", dialog);
    this.picker = $("dir-picker", dialog);
    this.dirList = $("dir-list", dialog);
    this.dirCurrent = $("dir-current", dialog);
    this.rootLabel = $("ns-root", dialog);
    this.listing = null;
    $("ns-browse", dialog).addEventListener("click", () => this.browse(this.cwd.value.trim()));
    $("dir-up", dialog).addEventListener("click", () => this.listing && this.listing.parent !== null && this.browse(this.listing.parent));
    $("dir-choose", dialog).addEventListener("click", () => this.choose(this.listing ? this.listing.path : ""));
    $("ns-cancel", dialog).addEventListener("click", () => dialog.close());
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
  }

  async open() {
    this.error.hidden = true;
    if (!this.server) {
      try {
        this.server = await api("GET", "/v1/server");
      } catch {
        this.server = { features: [], workspace_root: null };
      }
    }
    const saved = this.remembered();
    this.cwd.value = saved.cwd || "";
    this.model.value = saved.model || "";
    this.model.placeholder = this.server.model ? `server default (${this.server.model})` : "server default";
    this.rootLabel.textContent = this.server.workspace_root || "the server's working directory";
    const modes = approvals.permissionModes(this.server);
    this.permission.disabled = modes.length === 0;
    this.permissionNote.hidden = modes.length > 0;
    if (modes.length) {
      this.permission.replaceChildren(...modes.map((m) => h("option", { value: m }, m)));
      if (saved.permission_mode && modes.includes(saved.permission_mode)) this.permission.value = saved.permission_mode;
    }
    this.picker.hidden = true;
    this.dialog.showModal();
    this.cwd.focus();
  }

  remembered() {
    try {
      return JSON.parse(localStorage.getItem(REMEMBER) || "{}");
    } catch {
      return {};
    }
  }

  async browse(path) {
    try {
      this.listing = await api("GET", `/v1/workspace/dirs?path=${encodeURIComponent(path)}`);
    } catch (err) {
      if (path) return this.browse(""); // a typed path that is not there: start at the root
      this.showError(`cannot list directories: ${err.message}`);
      return;
    }
    const l = this.listing;
    this.picker.hidden = false;
    this.dirCurrent.textContent = l.path ? `${l.root}/${l.path}` : l.root;
    $("dir-up", this.dialog).disabled = l.parent === null;
    const items = l.dirs.map((d) =>
      h("li", {}, h("button", { type: "button", class: "dir", "data-testid": "dir-entry", "data-path": d.path, onclick: () => this.browse(d.path), ondblclick: () => this.choose(d.path) }, d.name + "/")),
    );
    if (!items.length) items.push(h("li", { class: "muted" }, "no directories here"));
    if (l.truncated) items.push(h("li", { class: "muted" }, "… more not shown"));
    this.dirList.replaceChildren(...items);
  }

  choose(path) {
    this.cwd.value = path;
    this.picker.hidden = true;
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = false;
  }

  async submit() {
    const options = {};
    const cwd = this.cwd.value.trim();
    const model = this.model.value.trim();
    if (cwd) options.cwd = cwd;
    if (model) options.model = model;
    if (!this.permission.disabled) options.permission_mode = this.permission.value;
    localStorage.setItem(REMEMBER, JSON.stringify({ cwd, model, permission_mode: this.permission.disabled ? undefined : this.permission.value }));
    const button = $("ns-create", this.dialog);
    button.disabled = true;
    let id;
    try {
      id = await this.create(options);
      this.dialog.close(); // before the session is shown: nothing on the page waits behind a modal
    } catch (err) {
      this.showError(err.message);
    } finally {
      button.disabled = false;
    }
    if (id) this.created(id);
  }
}
