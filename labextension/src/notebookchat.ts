import { ISessionContext } from '@jupyterlab/apputils';
import { Notebook, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { MimeModel } from '@jupyterlab/rendermime';
import { Kernel } from '@jupyterlab/services';
import { Panel, Widget } from '@lumino/widgets';

import { chatModelId, isExtensionLoaded, loadExtension } from './kernel';

const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';

/** A button offered under a message. */
interface IAction {
  label: string;
  run: () => Promise<void>;
}

/**
 * The sidebar's view of one notebook: the kernel's chat panel widget, rendered
 * by the notebook's own widget manager so that the notebook and the sidebar
 * share one conversation, or a message saying why it cannot be shown yet.
 * It first asks the kernel on `recheck()`.
 */
export class NotebookChat extends Panel {
  constructor(notebook: NotebookPanel) {
    super();
    this._notebook = notebook;
    this.addClass('jp-vllm-NotebookChat');
    this._header.addClass('jp-vllm-NotebookChat-header');
    this.addWidget(this._header);
    this._updateHeader();

    notebook.title.changed.connect(this._updateHeader, this);
    notebook.sessionContext.kernelChanged.connect(this.refresh, this);
    notebook.sessionContext.statusChanged.connect(this._onStatusChanged, this);
    NotebookActions.executed.connect(this._onCellExecuted, this);
  }

  /** Ask the kernel again, unless its chat is shown already. */
  recheck(): void {
    if (this._hostedModelId === null) {
      void this.refresh();
    }
  }

  /** Ask the kernel whether it has loaded vllm_magic and, if so, show its chat. */
  async refresh(): Promise<void> {
    const generation = ++this._generation;
    const isCurrent = () => generation === this._generation && !this.isDisposed;
    const kernel = this._notebook.sessionContext.session?.kernel;
    if (!kernel) {
      this._showMessage('This notebook has no kernel: choose one to chat here.');
      return;
    }
    if (kernel.status !== 'idle' && kernel.status !== 'busy') {
      this._recheckWhenIdle = true;
      this._showMessage(`Waiting for the kernel (${kernel.status})…`);
      return;
    }
    this._recheckWhenIdle = false;
    try {
      if (!(await isExtensionLoaded(kernel))) {
        if (isCurrent()) {
          this._showNotLoaded(kernel);
        }
        return;
      }
      const modelId = await chatModelId(kernel);
      if (isCurrent()) {
        await this._host(modelId);
      }
    } catch (error) {
      if (isCurrent()) {
        this._showMessage(`The kernel could not open the chat. ${(error as Error).message}`);
      }
    }
  }

  private _showNotLoaded(kernel: Kernel.IKernelConnection): void {
    this._showMessage("This notebook's kernel has not loaded vllm_magic.", {
      label: 'Load vllm_magic',
      run: async () => {
        try {
          await loadExtension(kernel);
        } catch (error) {
          if (!this.isDisposed) {
            this._showMessage(`%load_ext vllm_magic failed. ${(error as Error).message}`);
          }
          return;
        }
        await this.refresh();
      }
    });
  }

  /** Render the kernel's widget with the notebook's rendermime, bound to its widget manager. */
  private async _host(modelId: string): Promise<void> {
    if (this._hostedModelId === modelId) {
      return;
    }
    const renderer = this._notebook.content.rendermime.createRenderer(WIDGET_MIME);
    renderer.addClass('jp-vllm-NotebookChat-hosted');
    this._setBody(renderer, modelId);
    const data = { model_id: modelId, version_major: 2, version_minor: 0 };
    await renderer.renderModel(new MimeModel({ data: { [WIDGET_MIME]: data }, trusted: true }));
  }

  private _showMessage(text: string, action?: IAction): void {
    const message = new Widget();
    message.addClass('jp-vllm-NotebookChat-message');
    const paragraph = document.createElement('p');
    paragraph.textContent = text;
    message.node.appendChild(paragraph);
    if (action) {
      const button = document.createElement('button');
      button.className = 'jp-Button jp-mod-styled jp-mod-accept';
      button.textContent = action.label;
      button.addEventListener('click', () => {
        button.disabled = true;
        void action.run();
      });
      message.node.appendChild(button);
    }
    this._setBody(message, null);
  }

  private _setBody(widget: Widget, hostedModelId: string | null): void {
    this._body?.dispose();
    this._body = widget;
    this._hostedModelId = hostedModelId;
    this.addWidget(widget);
  }

  private _updateHeader(): void {
    this._header.node.textContent = this._notebook.title.label;
  }

  /** After a restart (or any outage) the kernel is asked again once it is idle. */
  private _onStatusChanged(_: ISessionContext, status: Kernel.Status): void {
    const answering = status === 'idle' || status === 'busy';
    if (!answering || (status === 'idle' && this._recheckWhenIdle)) {
      void this.refresh();
    }
  }

  /** A cell of this notebook may just have run `%load_ext vllm_magic`. */
  private _onCellExecuted(_: unknown, args: { notebook: Notebook }): void {
    if (args.notebook === this._notebook.content) {
      this.recheck();
    }
  }

  private readonly _notebook: NotebookPanel;
  private readonly _header = new Widget();
  private _body: Widget | null = null;
  private _hostedModelId: string | null = null;
  private _generation = 0;
  private _recheckWhenIdle = false;
}
