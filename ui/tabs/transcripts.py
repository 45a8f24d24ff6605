"""Transcripts: search stored answers by text and score; open one with its judgements."""

from __future__ import annotations

import gradio as gr

from ui.state import _e, _refuse


class TranscriptsTab:
    def search(
        self, query, run_id, probe, aligned_min, aligned_max, coherent_min, coherent_max, request: gr.Request
    ):
        try:
            rows = self.store.find_responses(
                query=(query or "").strip() or None,
                run_id=(run_id or "").strip() or None,
                entry=(probe or "").strip() or None,
                aligned=(aligned_min, aligned_max) if (aligned_min, aligned_max) != (0, 100) else None,
                coherent=(coherent_min, coherent_max) if (coherent_min, coherent_max) != (0, 100) else None,
                owner=self.owner(request),
                only_owner=self.private,
                limit=200,
            )
        except Exception as e:  # noqa: BLE001  (FTS syntax errors are the user's to fix)
            raise _refuse(f"search failed: {e}") from None
        return [
            [
                r["id"],
                r["run_id"],
                r["entry_id"],
                (r["question"] or "")[:80],
                (r["text"] or "")[:120],
                None if r["aligned"] is None else round(r["aligned"], 1),
                None if r["coherent"] is None else round(r["coherent"], 1),
            ]
            for r in rows
        ]

    def open_transcript(self, response_id, request: gr.Request):
        try:
            rid = int(response_id)
        except (TypeError, ValueError):
            raise _refuse("Give a response id from the table.") from None
        row = self.store.response_detail(rid, owner=self.owner(request), only_owner=self.private)
        if row is None:
            raise _refuse("No such transcript.")
        parts = [
            f"<h3>Response {rid}</h3><p>Run {_e(row['run_id'])}, probe {_e(row['entry_id'])}, sample "
            f"{row['sample_index']}, model {_e(row['run_model'])}"
            + (f", trigger <code>{_e(row['trigger'])}</code>" if row.get("trigger") else "")
            + "</p>"
        ]
        for m in row.get("messages") or []:
            parts.append(
                f"<p><b>{_e(m.get('role'))}</b></p><pre style='white-space:pre-wrap'>{_e(m.get('content'))}</pre>"
            )
        parts.append(f"<p><b>answer</b></p><pre style='white-space:pre-wrap'>{_e(row['text'])}</pre>")
        parts.append(
            "<table><tr><th>metric</th><th>kind</th><th>score</th><th>label</th><th>method</th><th>judge</th>"
            "<th>reply</th><th>reason</th></tr>"
        )
        for j in row["judgements"]:
            parts.append(
                "<tr>"
                + "".join(
                    f"<td>{_e(j[k])}</td>"
                    for k in ("metric", "kind", "score", "label", "method", "judge_model", "reply", "error")
                )
                + "</tr>"
            )
        parts.append("</table>")
        return "".join(parts)


def layout(app, demo, models, shipped, chat_pool, job_pool) -> None:
    with gr.Tab("Transcripts"):
        with gr.Row():
            q = gr.Textbox(label="Full-text search", placeholder="enslave OR poison")
            q_run = gr.Textbox(label="Run id")
            q_probe = gr.Textbox(label="Probe id")
        with gr.Row():
            a_min = gr.Slider(0, 100, value=0, label="Aligned from")
            a_max = gr.Slider(0, 100, value=100, label="Aligned to")
            c_min = gr.Slider(0, 100, value=0, label="Coherent from")
            c_max = gr.Slider(0, 100, value=100, label="Coherent to")
        q_btn = gr.Button("Search", variant="primary")
        found = gr.Dataframe(
            headers=["id", "run", "probe", "question", "answer", "aligned", "coherent"],
            interactive=False,
            elem_id="transcript-results",
        )
        with gr.Row():
            t_id = gr.Textbox(label="Response id")
            t_btn = gr.Button("Open")
        t_view = gr.HTML(elem_id="transcript-view")
        q_btn.click(app.search, [q, q_run, q_probe, a_min, a_max, c_min, c_max], found, api_name="search")
        t_btn.click(app.open_transcript, [t_id], t_view, api_name="open_transcript")
