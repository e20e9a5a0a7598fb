import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { OPEN_SIDEBAR_COMMAND } from './sidebar';

/** What `%vllm sidebar` displays: `{"command": "open-sidebar"}`. */
export const COMMAND_MIME = 'application/vnd.vllm-magic.command+json';

/**
 * Renders a kernel's request to open the sidebar by opening it. Not safe for
 * untrusted output, so that a notebook from elsewhere cannot drive the UI.
 */
export function commandRendererFactory(commands: CommandRegistry): IRenderMime.IRendererFactory {
  return {
    safe: false,
    mimeTypes: [COMMAND_MIME],
    createRenderer: () => new CommandOutput(commands)
  };
}

class CommandOutput extends Widget implements IRenderMime.IRenderer {
  constructor(private readonly _commands: CommandRegistry) {
    super();
    this.addClass('jp-vllm-CommandOutput');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const command = (model.data[COMMAND_MIME] as { command?: string } | undefined)?.command;
    if (command !== 'open-sidebar') {
      this.node.textContent = `Unknown vllm_magic command: ${command}`;
      return;
    }
    await this._commands.execute(OPEN_SIDEBAR_COMMAND);
    this.node.textContent = 'Opened the vLLM chat sidebar →';
  }
}
