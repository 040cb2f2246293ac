// Answering the review gate from the page: approve, or request changes with
// a comment, through ReviewBuild, the same RPC and rule as every client (a
// user may review their own builds; a service needs a write-scoped token
// naming the reviewer). A refusal is shown as the server's one-line message.

import { BuildStatus, ConnectError, ReviewDecision, connectBuildPlatformWeb, type Build } from "@buildplatform/api/web";

type Builds = ReturnType<typeof connectBuildPlatformWeb>["builds"];

const GATES = new Set([BuildStatus.AWAITING_DESIGN_REVIEW, BuildStatus.AWAITING_FEATURE_REVIEW]);

export class ReviewForm {
  private build: Build | null = null;
  private readonly comment: HTMLTextAreaElement;
  private readonly reviewer: HTMLInputElement;
  private readonly answer: HTMLElement;
  private readonly buttons: HTMLButtonElement[];

  constructor(
    private readonly form: HTMLElement,
    private readonly builds: Builds,
  ) {
    this.comment = form.querySelector("textarea")!;
    this.reviewer = form.querySelector("input")!;
    this.answer = form.querySelector(".review-answer")!;
    this.buttons = [...form.querySelectorAll<HTMLButtonElement>("button[data-decision]")];
    for (const button of this.buttons) {
      button.addEventListener("click", () => void this.send(button.dataset.decision === "approve" ? ReviewDecision.APPROVE : ReviewDecision.REQUEST_CHANGES));
    }
  }

  show(build: Build): void {
    const waiting = GATES.has(build.status);
    if (waiting && this.build?.status !== build.status) {
      this.answer.textContent = "";
      delete this.answer.dataset.state;
    }
    this.build = build;
    this.form.hidden = !waiting;
  }

  private async send(decision: ReviewDecision): Promise<void> {
    const build = this.build;
    if (build === null) return;
    const comment = this.comment.value.trim();
    if (decision === ReviewDecision.REQUEST_CHANGES && comment === "") {
      this.say("refused", "Say what to change in the comment, then request changes.");
      return;
    }
    for (const button of this.buttons) button.disabled = true;
    try {
      const { build: after } = await this.builds.reviewBuild({ id: build.id, decision, comment, reviewer: this.reviewer.value.trim(), etag: build.etag });
      this.comment.value = "";
      this.say("sent", decision === ReviewDecision.APPROVE ? "Approved: the build goes on." : "Changes requested.");
      if (after) this.build = after;
    } catch (caught) {
      const error = ConnectError.from(caught);
      this.say("refused", `Not recorded: ${error.rawMessage}`);
    } finally {
      for (const button of this.buttons) button.disabled = false;
    }
  }

  private say(state: string, text: string): void {
    this.answer.dataset.state = state;
    this.answer.textContent = text;
  }
}
