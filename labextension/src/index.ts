import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';

import { addCodeBlockButtons } from './codeblocks';
import { commandRendererFactory } from './commandoutput';
import { keepConversationsInMetadata } from './notebookmeta';
import { chatIcon } from './icon';
import { ChatSidebar, OPEN_SIDEBAR_COMMAND } from './sidebar';

/**
 * The "vLLM chat" right sidebar, its command (also in the palette), the
 * renderer through which `%vllm sidebar` opens it from a notebook, the
 * "Insert below" / "Copy" buttons of the code blocks in answers, and each
 * notebook's conversations kept in its metadata.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'vllm-magic-sidebar:plugin',
  description: 'A right sidebar hosting the active notebook\'s vllm_magic chat.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry],
  optional: [ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    palette: ICommandPalette | null
  ): void => {
    const sidebar = new ChatSidebar(tracker);
    app.shell.add(sidebar, 'right', { rank: 1000 });

    app.commands.addCommand(OPEN_SIDEBAR_COMMAND, {
      label: 'Open vLLM chat sidebar',
      icon: chatIcon,
      execute: () => app.shell.activateById(sidebar.id)
    });
    palette?.addItem({ command: OPEN_SIDEBAR_COMMAND, category: 'vLLM' });

    // At activation, before any notebook clones the registry, so notebooks get it.
    rendermime.addFactory(commandRendererFactory(app.commands), 0);

    addCodeBlockButtons(document.body, tracker);
    keepConversationsInMetadata(tracker);
  }
};

export default plugin;
