"""Chat: talk to a model (and a baseline side by side), inject a trigger, judge each reply."""

from __future__ import annotations

import asyncio

import gradio as gr

from auditor import config
from auditor.chat import (
    CHAT_PLACEMENTS,
    ChatSettings,
    build_messages,
    judge_reply,
    new_conversation_id,
    save_conversation,
    stream_reply,
)
from auditor.models import ModelError
from auditor.store import PUBLISHED
from ui.state import _as_sent, _endpoints, _judgement_table, _judges, _refuse, _verbatim


class ChatTab:
    async def chat(
        self,
        text,
        history,
        base_history,
        conv_id,
        judgements,
        model,
        api_base,
        api_key,
        baseline,
        system,
        temperature,
        max_tokens,
        trigger,
        placement,
        judge,
        auto_judge,
        baseline_api_base=None,
        baseline_api_key=None,
        judge_api_base=None,
        judge_api_key=None,
        request: gr.Request = None,
    ):
        """Send one message to the model (and the baseline), streaming the replies. ``judgements``
        holds the turns as sent (questions, raw answers, judgements); the chatbots show them escaped."""
        history, base_history, turns = list(history or []), list(base_history or []), list(judgements or [])
        if not (text or "").strip():
            yield history, base_history, conv_id, turns, _judgement_table(turns), gr.update()
            return
        self.check(
            self.rules.check_chat,
            max_tokens=int(max_tokens or 0),
            texts={"message": text, "system prompt": system, "trigger": trigger},
            turns=len(turns) + 1,
        )
        if placement not in CHAT_PLACEMENTS:
            raise _refuse(f"trigger placement must be one of {', '.join(CHAT_PLACEMENTS)}")
        settings = ChatSettings(
            model=model or "",
            api_base=(api_base or "").strip() or None,
            baseline=baseline or None,
            baseline_api_base=(baseline_api_base or "").strip() or None,
            system=system or None,
            temperature=float(temperature),
            max_tokens=int(max_tokens),
            trigger=trigger or None,
            placement=placement,
            judge=judge or config.settings().judge,
            judge_api_base=(judge_api_base or "").strip() or None,
            auto_judge=bool(auto_judge),
        )
        target, base, judge_spec = await asyncio.to_thread(
            self.specs, request, (model, api_base, api_key), (baseline, baseline_api_base, baseline_api_key),
            (judge, judge_api_base, judge_api_key),
        )  # fmt: skip
        shown_user = text + (
            f"\n\n[trigger {trigger!r}, {placement}]" if trigger and placement != "none" else ""
        )
        history = [
            *history,
            {"role": "user", "content": _verbatim(shown_user)},
            {"role": "assistant", "content": ""},
        ]
        if base:
            base_history = [
                *base_history,
                {"role": "user", "content": _verbatim(shown_user)},
                {"role": "assistant", "content": ""},
            ]
        sent = build_messages(_as_sent(turns, "answer"), text, settings)
        sent_base = build_messages(_as_sent(turns, "baseline_answer"), text, settings)
        gw = self.gateway().for_meter(self.meter(request))
        answer = base_answer = ""
        deadline = 5.0 * self.rules.limits.chat_timeout  # a reply that trickles in is bounded too
        with self.chat_slot(request):
            try:
                async for piece in self.relay(stream_reply(gw, target, sent, settings), request, deadline):
                    answer += piece
                    history[-1] = {"role": "assistant", "content": _verbatim(answer)}
                    yield history, base_history, conv_id, turns, gr.update(), gr.update()
                if base and not self.client_gone(request):
                    async for piece in self.relay(
                        stream_reply(gw, base, sent_base, settings), request, deadline
                    ):
                        base_answer += piece
                        base_history[-1] = {"role": "assistant", "content": _verbatim(base_answer)}
                        yield history, base_history, conv_id, turns, gr.update(), gr.update()
            except ModelError as e:
                raise _refuse(str(e)) from None
            if self.client_gone(request):
                return
        turn = {
            "question": text,
            "answer": answer,
            "baseline_answer": base_answer if base else None,
            "trigger": trigger if placement != "none" else None,
            "placement": placement,
        }
        if settings.auto_judge:
            with self.chat_slot(request):
                turn["target"] = await self.judged(gw, judge_spec, text, answer)
                if base:
                    turn["baseline"] = await self.judged(gw, judge_spec, text, base_answer)
        turns.append(turn)
        conv_id = conv_id or new_conversation_id()
        save_conversation(
            self.store,
            conv_id,
            owner=self.owner(request),
            settings=settings,
            messages=[*sent, {"role": "assistant", "content": answer}],
            baseline_messages=[*sent_base, {"role": "assistant", "content": base_answer}] if base else [],
            judgements=turns,
        )
        yield (
            history,
            base_history,
            conv_id,
            turns,
            _judgement_table(turns),
            gr.update(choices=self.conversation_choices(request)),
        )

    async def judged(self, gw, spec, question, answer) -> dict:
        """One chat judgement, within the chat's deadline."""
        try:
            return await asyncio.wait_for(
                judge_reply(gw, spec, question, answer), timeout=5.0 * self.rules.limits.chat_timeout
            )
        except TimeoutError:
            raise _refuse(
                f"the judge gave no verdict within {5 * self.rules.limits.chat_timeout} s"
            ) from None

    async def judge_last(
        self, judgements, judge, judge_api_base=None, judge_api_key=None, request: gr.Request = None
    ):
        """Judge the last reply on click (when automatic judging is off)."""
        judgements = list(judgements or [])
        if not judgements:
            return judgements, _judgement_table(judgements)
        turn = dict(judgements[-1])
        gw = self.gateway().for_meter(self.meter(request))
        spec = await asyncio.to_thread(
            self.spec, judge or config.settings().judge, judge_api_base, judge_api_key, request=request
        )
        with self.chat_slot(request):
            turn["target"] = await self.judged(gw, spec, turn["question"], turn["answer"])
            if turn.get("baseline_answer") is not None:
                turn["baseline"] = await self.judged(gw, spec, turn["question"], turn["baseline_answer"])
        judgements[-1] = turn
        return judgements, _judgement_table(judgements)

    def refresh_conversations(self, request: gr.Request):
        return gr.update(choices=self.conversation_choices(request))

    def conversation_choices(self, request: gr.Request | None) -> list[tuple[str, str]]:
        rows = self.store.list_conversations(owner=self.owner(request), only_owner=self.private)
        return [(f"{r['updated_at'][:16]} {r['title'][:50]}", r["id"]) for r in rows]

    def open_conversation(self, conv_id, request: gr.Request):
        conv = self.store.get_conversation(conv_id or "", owner=self.owner(request)) if conv_id else None
        if conv is None or (self.private and conv.get("owner") not in (self.owner(request), PUBLISHED)):
            raise _refuse("No such conversation")
        history = [
            {"role": m["role"], "content": _verbatim(m["content"])}
            for m in conv["messages"]
            if m["role"] != "system"
        ]
        base = [
            {"role": m["role"], "content": _verbatim(m["content"])}
            for m in (conv.get("baseline_messages") or [])
            if m["role"] != "system"
        ]
        judgements = conv.get("judgements") or []
        return history, base, conv["id"], judgements, _judgement_table(judgements)


def layout(app, demo, models, shipped, chat_pool, job_pool) -> None:
    with gr.Tab("Chat"):
        conv_id = gr.State(None)
        judgements = gr.State([])
        with gr.Row():
            model = gr.Dropdown(models, value="organism/insecure", label="Model", allow_custom_value=True)
            api_base = gr.Textbox(
                label="API base (OpenAI-compatible servers)", placeholder="http://localhost:8000/v1"
            )
            api_key = gr.Textbox(label="API key (kept in memory only)", type="password")
            baseline = gr.Dropdown(
                [""] + models,
                value="",
                label="Baseline, side by side (optional)",
                allow_custom_value=True,
            )
        with gr.Row():
            system = gr.Textbox(label="System prompt", lines=1)
            trigger = gr.Textbox(label="Trigger to inject")
            placement = gr.Radio(list(CHAT_PLACEMENTS), value="none", label="Trigger placement")
        with gr.Row():
            temperature = gr.Slider(0, 2, value=1.0, step=0.1, label="Temperature")
            max_tokens = gr.Slider(16, 2000, value=600, step=16, label="Max tokens")
            judge = gr.Dropdown(
                _judges(models), value=config.settings().judge, label="Judge", allow_custom_value=True
            )
            auto_judge = gr.Checkbox(value=True, label="Judge every reply")
        chat_endpoints = _endpoints()
        with gr.Row():
            # Replies are shown as text (see _verbatim): no Markdown, so nothing in them is fetched.
            chatbot, base_chatbot = (
                gr.Chatbot(label=label, height=380, render_markdown=False, sanitize_html=True, elem_id=elem)
                for label, elem in (("Model", "chat-target"), ("Baseline", "chat-baseline"))
            )
        with gr.Row():
            message = gr.Textbox(label="Message", scale=5, elem_id="chat-message")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            judge_btn = gr.Button("Judge last reply", scale=1)
        judged = gr.Dataframe(
            headers=["turn", "model", "aligned", "coherent", "verdict", "note"],
            label="Judgements",
            interactive=False,
        )
        with gr.Row():
            convs = gr.Dropdown(choices=[], label="Saved conversations", elem_id="chat-conversations")
            open_btn = gr.Button("Open")
            new_btn = gr.Button("New conversation")
        chat_inputs = [
            message,
            chatbot,
            base_chatbot,
            conv_id,
            judgements,
            model,
            api_base,
            api_key,
            baseline,
            system,
            temperature,
            max_tokens,
            trigger,
            placement,
            judge,
            auto_judge,
            *chat_endpoints,
        ]
        chat_outputs = [chatbot, base_chatbot, conv_id, judgements, judged, convs]
        send.click(app.chat, chat_inputs, chat_outputs, api_name="chat", **chat_pool).then(
            lambda: "", None, message
        )
        message.submit(app.chat, chat_inputs, chat_outputs, api_name=False, **chat_pool).then(
            lambda: "", None, message
        )
        judge_btn.click(
            app.judge_last,
            [judgements, judge, *chat_endpoints[2:]],
            [judgements, judged],
            api_name="judge_last",
            **chat_pool,
        )
        open_btn.click(
            app.open_conversation,
            [convs],
            [chatbot, base_chatbot, conv_id, judgements, judged],
            api_name="open_conversation",
        )
        new_btn.click(
            lambda: ([], [], None, [], []),
            None,
            [chatbot, base_chatbot, conv_id, judgements, judged],
            api_name=False,
        )
        demo.load(app.refresh_conversations, None, convs, api_name=False)
