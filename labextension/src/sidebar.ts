import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Message } from '@lumino/messaging';
import { Panel, Widget } from '@lumino/widgets';

import { chatIcon } from './icon';
import { NotebookChat } from './notebookchat';

export const SIDEBAR_ID = 'vllm-magic-sidebar';
export const OPEN_SIDEBAR_COMMAND = 'vllm-magic:open-sidebar';

/**
 * The right sidebar "vLLM chat": shows the chat of the active notebook and
 * follows the user from notebook to notebook. Each notebook's view is made the
 * first time the sidebar shows it, kept while the notebook is open, and
 * disposed with it.
 */
export class ChatSidebar extends Panel {
  constructor(tracker: INotebookTracker) {
    super();
    this.id = SIDEBAR_ID;
    this.addClass('jp-vllm-Sidebar');
    this.title.icon = chatIcon;
    this.title.caption = 'vLLM chat';
    this._tracker = tracker;
    this._placeholder.addClass('jp-vllm-Sidebar-placeholder');
    this._placeholder.node.textContent = 'Open a notebook to chat with vLLM here.';
    this.addWidget(this._placeholder);
    tracker.currentChanged.connect(this._showCurrent, this);
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._showCurrent();
  }

  /** Show the current notebook's view (only while the sidebar is open, so closed ones cost nothing). */
  private _showCurrent(): void {
    if (!this.isVisible) {
      return;
    }
    const notebook = this._tracker.currentWidget;
    const current = notebook ? this._viewFor(notebook) : this._placeholder;
    for (const widget of this.widgets) {
      widget.setHidden(widget !== current);
    }
    if (current instanceof NotebookChat) {
      current.recheck();
    }
  }

  private _viewFor(notebook: NotebookPanel): NotebookChat {
    let view = this._views.get(notebook.id);
    if (!view) {
      view = new NotebookChat(notebook);
      this._views.set(notebook.id, view);
      this.addWidget(view);
      notebook.disposed.connect(() => {
        this._views.get(notebook.id)?.dispose();
        this._views.delete(notebook.id);
      });
    }
    return view;
  }

  private readonly _tracker: INotebookTracker;
  private readonly _placeholder = new Widget();
  private readonly _views = new Map<string, NotebookChat>();
}
