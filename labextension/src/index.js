// hubml in JupyterLab: where people look for it.
//
// - Launcher cards (category "hubml") and a "hubml" menu open each of hubml's panels: a new
//   notebook (or, from the menu, the notebook in front) gets a cell with the panel's two lines,
//   and the cell runs. The panels themselves stay ipywidgets (hubml.widgets).
// - "Make This the Parameters Cell" (a cell's context menu, and the hubml menu) tags the cell
//   papermill's "parameters", the only one in the notebook, which a jobs run sets values in.
// - "Insert code" (the FeatureBrowser's): a kernel's comm on the target hubml.insert puts its
//   code in a new cell below the active one.
// - A status-bar item says what this server runs on and what it has cost so far: the profile,
//   the GPU, the price per hour, and the cost counted from the hub's start of the server
//   (GET <server>/hubml/api/server, from the hubml server extension).
import { ILauncher } from '@jupyterlab/launcher';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ServerConnection } from '@jupyterlab/services';
import { URLExt } from '@jupyterlab/coreutils';
import { LabIcon } from '@jupyterlab/ui-components';
import { Menu, Widget } from '@lumino/widgets';

const CATEGORY = 'hubml';

// each panel: what the card and menu say, and the code that opens it
const PANELS = [
  {
    id: 'experiments',
    label: 'Experiments',
    caption: 'Log runs of this notebook to MLflow and register a model',
    code: 'from hubml.widgets import ExperimentPanel\nExperimentPanel()'
  },
  {
    id: 'publish',
    label: 'Publish a model',
    caption: 'Run the quality gates, ask for approval, see your approvals inbox',
    code: 'from hubml.widgets import PublishPanel\nPublishPanel()'
  },
  {
    id: 'schedule',
    label: 'Schedule this notebook',
    caption: 'Run this notebook as a job, now or on a schedule, on the compute you choose',
    code: 'from hubml.widgets import SchedulePanel\nSchedulePanel()'
  },
  {
    id: 'apps',
    label: 'Share an app',
    caption: 'Publish a Gradio demo as an app and share it as a link',
    code: 'from hubml.widgets import AppsPanel\nAppsPanel()'
  },
  {
    id: 'features',
    label: 'Browse features',
    caption: 'Find, understand and reuse features of your feature projects (Feast)',
    code: 'from hubml.widgets import FeatureBrowser\nFeatureBrowser()'
  }
];

// a small mark for the cards: the letters "ml" in a rounded square
const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="52" height="52" viewBox="0 0 52 52">' +
  '<rect x="2" y="2" width="48" height="48" rx="10" fill="#1f6feb"/>' +
  '<text x="26" y="34" font-family="sans-serif" font-size="20" font-weight="bold" ' +
  'fill="#fff" text-anchor="middle">ml</text></svg>';

async function openPanel(app, tracker, panel, inFront) {
  let notebook = inFront ? tracker.currentWidget : null;
  if (!notebook) {
    notebook = await app.commands.execute('notebook:create-new', { kernelName: 'python3' });
  }
  await notebook.context.ready;
  await notebook.sessionContext.ready;
  const content = notebook.content;
  const active = content.activeCell;
  if (!active || active.model.sharedModel.getSource().trim() !== '') {
    NotebookActions.insertBelow(content);
  }
  content.activeCell.model.sharedModel.setSource(panel.code);
  app.shell.activateById(notebook.id);
  await NotebookActions.run(content, notebook.sessionContext);
}

// as the hub writes them: prices with 3 decimals under $1 (catalog.format_usd), running costs
// with 4 (the hub's home page), so both read the same
function price(amount) {
  return '$' + (amount > 0 && amount < 1 ? amount.toFixed(3) : amount.toFixed(2));
}

function hasTag(cell, tag) {
  const tags = cell ? cell.model.getMetadata('tags') : null;
  return Array.isArray(tags) && tags.includes(tag);
}

// the active cell becomes the notebook's only "parameters" cell (a second click untags it)
function makeParametersCell(tracker) {
  const notebook = tracker.currentWidget;
  const active = tracker.activeCell;
  if (!notebook || !active) {
    return;
  }
  const wasOn = hasTag(active, 'parameters');
  for (const cell of notebook.content.widgets) {
    const tags = cell.model.getMetadata('tags');
    if (Array.isArray(tags) && tags.includes('parameters')) {
      const rest = tags.filter(t => t !== 'parameters');
      if (rest.length) {
        cell.model.setMetadata('tags', rest);
      } else {
        cell.model.deleteMetadata('tags');
      }
    }
  }
  if (!wasOn) {
    const tags = active.model.getMetadata('tags');
    active.model.setMetadata('tags', [...(Array.isArray(tags) ? tags : []), 'parameters']);
  }
}

// "Insert code" of hubml's panels (FeatureBrowser): the kernel opens a comm on the target
// hubml.insert with {code}; the code becomes a new cell below the active one (not run), and
// the kernel hears {inserted: true}
function listenForInserts(panel) {
  const register = () => {
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    if (!kernel) {
      return;
    }
    kernel.registerCommTarget('hubml.insert', (comm, msg) => {
      const code = (msg.content.data && msg.content.data.code) || '';
      const content = panel.content;
      let inserted = false;
      if (code) {
        NotebookActions.insertBelow(content);
        content.activeCell.model.sharedModel.setSource(code);
        inserted = true;
      }
      comm.send({ inserted });
      comm.close();
    });
  };
  panel.sessionContext.kernelChanged.connect(register);
  panel.sessionContext.ready.then(register).catch(() => undefined);
}

function money(amount) {
  return '$' + amount.toFixed(amount < 1 ? 4 : 2);
}

function elapsed(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return h ? `${h} h ${m} min` : `${m} min`;
}

class ServerCost extends Widget {
  constructor() {
    super();
    this.addClass('hubml-statusbar');
    this.node.title = 'hubml: what this server runs on, and what it has cost so far';
    this.info = null;
  }

  async load() {
    const settings = ServerConnection.makeSettings();
    const url = URLExt.join(settings.baseUrl, 'hubml/api/server');
    try {
      const response = await ServerConnection.makeRequest(url, {}, settings);
      if (response.ok) {
        this.info = await response.json();
      }
    } catch (e) {
      this.info = null;
    }
    this.render();
  }

  render() {
    const info = this.info;
    if (!info || !info.profile) {
      this.node.textContent = '';
      this.hide();
      return;
    }
    this.show();
    const parts = [info.profile_name || info.profile];
    if (info.gpu && info.gpu !== 'none') {
      parts.push(info.gpu);
    }
    const perHour = info.price_per_hour;
    if (perHour !== null && perHour !== undefined) {
      parts.push(`${price(perHour)}/h`);
      const started = Date.parse(info.started_at || '');
      if (!isNaN(started)) {
        const seconds = Math.max(0, (Date.now() - started) / 1000);
        const cost = (perHour * seconds) / 3600;
        parts.push(`${money(cost)} so far (${elapsed(seconds)})`);
        this.node.dataset.cost = cost.toFixed(6);
      }
    }
    this.node.textContent = parts.join(' · ');
  }
}

const plugin = {
  id: 'hubml-lab:plugin',
  description: "hubml's panels in the launcher and a menu; the server's cost in the status bar.",
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILauncher, IMainMenu, IStatusBar],
  activate: (app, tracker, launcher, mainMenu, statusBar) => {
    const labIcon = new LabIcon({ name: 'hubml:icon', svgstr: ICON_SVG });
    tracker.widgetAdded.connect((_, panel) => listenForInserts(panel));
    const menu = new Menu({ commands: app.commands });
    menu.title.label = 'hubml';
    PANELS.forEach((panel, rank) => {
      const command = `hubml:open-${panel.id}`;
      app.commands.addCommand(command, {
        label: args => (args.isLauncher ? panel.label : `${panel.label} (in this notebook)`),
        caption: panel.caption,
        icon: args => (args.isLauncher ? labIcon : undefined),
        execute: args => openPanel(app, tracker, panel, !args.isLauncher)
      });
      if (launcher) {
        launcher.add({ command, category: CATEGORY, rank, args: { isLauncher: true } });
      }
      menu.addItem({ command });
    });
    // papermill's parameters cell, one click away: a jobs run replaces its values
    app.commands.addCommand('hubml:parameters-cell', {
      label: 'Make This the Parameters Cell (hubml jobs)',
      caption: "Tag this cell 'parameters': a scheduled run sets the values it assigns",
      isToggled: () => hasTag(tracker.activeCell, 'parameters'),
      isEnabled: () => !!tracker.activeCell && tracker.activeCell.model.type === 'code',
      execute: () => makeParametersCell(tracker)
    });
    app.contextMenu.addItem({
      command: 'hubml:parameters-cell',
      selector: '.jp-Notebook .jp-Cell',
      rank: 20
    });
    menu.addItem({ type: 'separator' });
    menu.addItem({ command: 'hubml:parameters-cell' });
    // the home page (another origin: a new tab), from where the bridge says it is
    let homeUrl = '';
    app.commands.addCommand('hubml:open-home', {
      label: 'Open Your hubml Home',
      caption: 'Your servers, schedules, recent runs, apps and the approvals waiting for you',
      isEnabled: () => Boolean(homeUrl),
      execute: () => window.open(homeUrl, '_blank', 'noopener')
    });
    menu.addItem({ type: 'separator' });
    menu.addItem({ command: 'hubml:open-home' });
    const settings = ServerConnection.makeSettings();
    ServerConnection.makeRequest(URLExt.join(settings.baseUrl, 'hubml/api/server'), {}, settings)
      .then(response => (response.ok ? response.json() : {}))
      .then(info => {
        homeUrl = (info && info.home_url) || '';
        app.commands.notifyCommandChanged('hubml:open-home');
      })
      .catch(() => undefined);
    if (mainMenu) {
      mainMenu.addMenu(menu, true, { rank: 80 });
    }
    if (statusBar) {
      const item = new ServerCost();
      statusBar.registerStatusItem('hubml-lab:cost', {
        item,
        align: 'left',
        rank: 10,
        isActive: () => true
      });
      item.load();
      setInterval(() => item.render(), 1000);
      setInterval(() => item.load(), 60000);
    }
  }
};

export default plugin;
