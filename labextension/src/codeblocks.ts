import { Clipboard } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';

/** A code block of a vllm_magic answer, as its Markdown renderer writes it. */
const CODE_BLOCK = '.vllm-magic pre.highlight, .vllm-magic-panel pre.highlight';
const DONE = 'vllmButtons';

/**
 * Gives every code block of an answer (in cells, the chat panel and the sidebar) "Insert below" and
 * "Copy" buttons. Answers are plain HTML outputs, so the buttons are added to the page as the blocks
 * appear; without this extension the answer is unchanged.
 */
export function addCodeBlockButtons(root: HTMLElement, tracker: INotebookTracker): MutationObserver {
  let scheduled = false;
  // The page changes at every keystroke: look for new blocks at most once a frame.
  const observer = new MutationObserver(() => {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(() => {
        scheduled = false;
        decorate(root, tracker);
      });
    }
  });
  observer.observe(root, { childList: true, subtree: true });
  decorate(root, tracker);
  return observer;
}

function decorate(root: HTMLElement, tracker: INotebookTracker): void {
  root.querySelectorAll<HTMLPreElement>(CODE_BLOCK).forEach(pre => {
    if (pre.dataset[DONE]) {
      return;
    }
    pre.dataset[DONE] = '1';
    const bar = document.createElement('div');
    bar.className = 'jp-vllm-CodeButtons';
    bar.append(
      button('Insert below', 'Insert this code as a new cell below', () => insertBelow(pre, tracker)),
      button('Copy', 'Copy this code', () => Clipboard.copyToSystem(codeOf(pre)))
    );
    pre.before(bar);
  });
}

function button(label: string, title: string, onClick: () => void): HTMLButtonElement {
  const element = document.createElement('button');
  element.className = 'jp-vllm-CodeButton';
  element.textContent = label;
  element.title = title;
  element.addEventListener('click', event => {
    event.stopPropagation();
    onClick();
  });
  return element;
}

function codeOf(pre: HTMLPreElement): string {
  return (pre.textContent ?? '').replace(/\n$/, '');
}

/**
 * A new code cell holding the block, below the cell whose output shows it; from the sidebar (outside
 * any notebook), below the active cell of the current notebook. Not run.
 */
function insertBelow(pre: HTMLPreElement, tracker: INotebookTracker): void {
  let panel: NotebookPanel | null = null;
  tracker.forEach(candidate => {
    if (candidate.node.contains(pre)) {
      panel = candidate;
    }
  });
  const target = (panel ?? tracker.currentWidget) as NotebookPanel | null;
  if (!target) {
    return;
  }
  const notebook = target.content;
  const index = notebook.widgets.findIndex(cell => cell.node.contains(pre));
  if (index >= 0) {
    notebook.activeCellIndex = index;
  }
  NotebookActions.insertBelow(notebook);
  notebook.activeCell?.model.sharedModel.setSource(codeOf(pre));
}
